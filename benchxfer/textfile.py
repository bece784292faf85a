"""The one line for a text file benchxfer cannot read: which file, which line, which encoding it looks like and
which is expected (UTF-8), or why it cannot be opened (missing, a folder, no permission, a symbolic link loop).
Sweep and pre-training files, list files and CSV files all go through here."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from benchxfer.errors import BenchxferError


def looks_utf16(raw: bytes) -> bool:
    """A UTF-16 byte-order mark, or ASCII text in UTF-16 (every other byte of its start is NUL)."""
    head = raw[:16]
    return raw[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(head) >= 8 and (not any(head[1::2]) or not any(head[0::2])))


def utf16(path: Path | str, what: str) -> BenchxferError:
    return BenchxferError(f"{path}: UTF-16 text; {what} must be UTF-8, re-save it as UTF-8")


def utf8_text(path: Path | str, raw: bytes, what: str) -> str:
    """``raw`` decoded as UTF-8 (a byte-order mark at the start dropped), or the one line for a file that is not
    UTF-8: the file, the line and byte, the encoding it looks like, and the encoding expected."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if looks_utf16(raw):
            raise utf16(path, what) from None
        line = raw.count(b"\n", 0, err.start) + 1
        looks = f"byte 0x{raw[err.start]:02x}, perhaps Latin-1 or Windows-1252"
        raise BenchxferError(f"{path}: line {line}: not UTF-8 text ({looks}); {what} must be UTF-8, re-save it "
                             "as UTF-8") from None


def open_problem(path: Path, err: OSError, what: str) -> BenchxferError:
    """The one line for a file that cannot be opened: missing, a folder, no permission, a symbolic link loop."""
    if err.errno == errno.ELOOP:
        return BenchxferError(f"{path}: a symbolic link loop, not a {what}")
    if isinstance(err, FileNotFoundError):
        if path.is_symlink():
            return BenchxferError(f"{path}: a symbolic link to {os.readlink(path)}, which does not exist")
        return BenchxferError(f"{path}: {what} is missing")
    if isinstance(err, IsADirectoryError):
        return BenchxferError(f"{path}: is a folder, not a {what}")
    if isinstance(err, PermissionError):
        return BenchxferError(f"{path}: cannot read the {what} (permission denied)")
    return BenchxferError(f"{path}: cannot read the {what} ({err.strerror or err})")

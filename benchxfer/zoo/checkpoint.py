"""Read checkpoint files without running code from them.

Every file is read either as safetensors or with ``torch.load(..., weights_only=True)``. A pickle that
needs arbitrary code to unpickle is refused with one line and never executed. The single exception is
:func:`trusted_unpickle`, used only for the BYOL Haiku pickle and only when the caller passed
``trust=True`` (``benchxfer zoo import ... --trust``).
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchxfer.errors import BenchxferError

# Harmless containers that published checkpoints pickle next to their tensors (PyContrast stores its
# argparse options under "opt"). Allow-listing them lets weights_only=True read those files.
SAFE_EXTRA_GLOBALS: list[Any] = [argparse.Namespace]


@dataclass
class RawCheckpoint:
    """What a checkpoint file holds: the unpickled object (or the safetensors tensor dict) and metadata."""

    path: Path
    obj: Any
    metadata: dict[str, str] | None  # safetensors metadata; None for a pickle

    @property
    def is_safetensors(self) -> bool:
        return self.metadata is not None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _culprit(err: BaseException) -> str:
    """The disallowed global or opcode named in torch's (long, multi-line) weights_only error."""
    text = str(err)
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if m:
        return f"the Python callable {m.group(1)}"
    m = re.search(r"Unsupported operand (\d+)", text)
    if m:
        return f"pickle opcode {m.group(1)}"
    return "objects other than tensors"


def is_safetensors_file(path: Path) -> bool:
    """True if ``path`` starts like a safetensors file (8-byte header length, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30


# the first bytes of files that users hand over by mistake
NOT_CHECKPOINTS = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
                   b"%PDF": "a PDF document", b"\x1f\x8b": "a gzip archive", b"DICM": "a DICOM file"}


def _check_looks_like_checkpoint(path: Path) -> None:
    """A torch.save file is a zip (PK..) or, in the legacy format, a pickle (protocol 2+ starts with 0x80);
    anything else is not a checkpoint, whatever torch.load would say about its bytes."""
    with open(path, "rb") as f:
        head = f.read(132)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return
    what = next((name for magic, name in NOT_CHECKPOINTS.items() if head.startswith(magic)), None)
    if what is None and head[128:132] == b"DICM":
        what = "a DICOM file"
    raise BenchxferError(
        f"{path} is not a checkpoint: {what or 'unknown content'} (first bytes {head[:4].hex(' ')}); expected a "
        "PyTorch file (torch.save: a zip or a pickle) or a .safetensors file")


# what a torch.save zip may declare beyond its own size: its records are stored uncompressed, so their sizes add up
# to about the file's; a file that declares far more holds compressed records that would be inflated in memory
DECLARED_SLACK_BYTES = 1 << 20


def _check_declared_sizes(path: Path) -> None:
    """Refuse a torch.save zip whose records declare more bytes than the file could hold uncompressed (a crafted
    file: 8 GiB of zeros in 37 MB), before ``torch.load`` allocates them. Only the zip's directory is read."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # torch.load names what is wrong with it
    declared = sum(i.file_size for i in infos)
    on_disk = path.stat().st_size
    if declared > 2 * on_disk + DECLARED_SLACK_BYTES:
        biggest = max(infos, key=lambda i: i.file_size)
        raise BenchxferError(
            f"refused {path}: its records declare {declared / 2**20:,.0f} MiB (the largest, {biggest.filename}, "
            f"{biggest.file_size / 2**20:,.0f} MiB) in a file of {on_disk / 2**20:,.1f} MiB; torch.save stores "
            "tensors uncompressed, so it was not loaded (loading would allocate that memory); check where the file "
            "came from")


# what a checkpoint's tensors may declare beyond its architecture's own weights: a second encoder (MoCo's key
# encoder, an EMA copy), an optimiser's copies and two ImageNet-sized memory banks (InsDis, PIRL, CMC: 1.28M x 128
# floats, 656 MB each) fit in ARCH_FACTOR x the weights + ARCH_SLACK_BYTES
ARCH_FACTOR = 4
ARCH_SLACK_BYTES = 2 << 30
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy (non-zip) torch.save file


class _Stub:
    """Stands in for every class and function a pickle names while its storage records are read: calling, building
    or filling one does nothing, so no code from the file runs."""

    module = name = ""

    def __new__(cls, *args: Any, **kwargs: Any):
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


def _itemsize(storage_type: Any) -> int | None:
    """Bytes per element of a storage class a pickle names (torch.FloatStorage, torch.UntypedStorage, ...)."""
    if not (isinstance(storage_type, type) and issubclass(storage_type, _Stub)):
        return None
    if storage_type.module != "torch" or not storage_type.name.endswith("Storage"):
        return None
    if storage_type.name == "UntypedStorage":
        return 1
    with warnings.catch_warnings():  # torch's typed storage classes warn that they are deprecated
        warnings.simplefilter("ignore")
        dtype = getattr(getattr(torch, storage_type.name, None), "dtype", None)
    return dtype.itemsize if isinstance(dtype, torch.dtype) else None


class _StorageReader(pickle.Unpickler):
    """Reads the storages a torch.save pickle declares (persistent ids: 'storage', type, key, location, numel[, view])
    without running anything: every global is a :class:`_Stub`."""

    def __init__(self, file: Any):
        super().__init__(file)
        self.storages: dict[str, int] = {}  # key -> declared bytes

    def find_class(self, module: str, name: str) -> Any:
        return type(name, (_Stub,), {"module": module, "name": name})

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage"):
            size = _itemsize(pid[1])
            numel = pid[4]
            if size is not None and isinstance(numel, int) and numel >= 0:
                key = pid[2].decode() if isinstance(pid[2], bytes) else str(pid[2])
                self.storages[key] = numel * size
        return _Stub()


def _declared_storages(path: Path) -> tuple[dict[str, int], dict[str, tuple[str, int]] | None] | None:
    """The bytes each storage of a torch.save file declares (key -> bytes), and for a zip its records (key -> name
    and size; None for a legacy pickle). None when the file cannot be read this way (torch.load names why)."""
    import io
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
                pkl = next((i for i in infos if i.filename.endswith("/data.pkl")), None)
                if pkl is None:
                    return None
                prefix = pkl.filename[: -len("data.pkl")] + "data/"
                reader = _StorageReader(io.BytesIO(archive.read(pkl)))
            reader.load()
            records = {i.filename[len(prefix):]: (i.filename, i.file_size) for i in infos
                       if i.filename.startswith(prefix)}
            return reader.storages, records
        with open(path, "rb") as f:
            if _StorageReader(f).load() != LEGACY_MAGIC:
                return None
            _StorageReader(f).load()  # the protocol version
            _StorageReader(f).load()  # the system's byte order and type sizes
            reader = _StorageReader(f)
            reader.load()
        return reader.storages, None
    except Exception:  # a damaged pickle or zip: torch.load says what is wrong with it
        return None


def arch_bound(archs: list[str]) -> tuple[int, str]:
    """The most bytes a checkpoint of one of ``archs`` may declare, and the words that say why."""
    from benchxfer.zoo.backbone import weight_bytes

    largest = max(archs, key=weight_bytes)
    held = weight_bytes(largest)
    who = f"a {largest} backbone" if len(archs) == 1 else f"the largest architecture it may hold ({largest})"
    return (ARCH_FACTOR * held + ARCH_SLACK_BYTES,
            f"{who} holds {held / 2**20:,.0f} MiB of weights, and a checkpoint may hold at most {ARCH_FACTOR} x that "
            f"+ {ARCH_SLACK_BYTES >> 30} GiB (a second encoder, optimiser state, memory banks)")


def _check_storages(path: Path, archs: list[str] | None) -> None:
    """Refuse a torch.save file whose pickle declares storages larger than its records, than the file, or than its
    architecture could need, before ``torch.load`` allocates them (it allocates what the pickle declares)."""
    found = _declared_storages(path)
    if found is None:
        return
    storages, records = found
    total = sum(storages.values())
    if archs and total > ARCH_SLACK_BYTES:  # below the slack no architecture is needed to accept it
        bound, why = arch_bound(archs)
        if total > bound:
            raise BenchxferError(
                f"refused {path}: its tensors declare {total / 2**20:,.0f} MiB in {len(storages)} storage(s), but "
                f"{why}; it was not loaded (loading would allocate that memory); check where the file came from")
    if records is not None:
        for key, nbytes in storages.items():
            name, size = records.get(key, (None, None))
            if size != nbytes:
                held = f"its record {name} holds {size:,}" if name else "the file holds no record of it"
                raise BenchxferError(
                    f"refused {path}: its pickle declares storage {key} of {nbytes:,} bytes, but {held}; it was not loaded (loading would allocate the declared size); check where the "
                    "file came from")
    elif total > path.stat().st_size:
        raise BenchxferError(
            f"refused {path}: its tensors declare {total / 2**20:,.1f} MiB, more than the whole file "
            f"({path.stat().st_size / 2**20:,.1f} MiB) holds; it was not loaded (loading would allocate that memory); "
            "check where the file came from")


def read_checkpoint(path: str | Path, archs: list[str] | None = None) -> RawCheckpoint:
    """Read ``path`` safely: safetensors, or ``torch.load(weights_only=True)`` on CPU, after checking the sizes its
    storages declare (against its records, its size and the largest of ``archs``, the architectures it may hold)."""
    path = Path(path)
    if not path.is_file():
        raise BenchxferError(f"checkpoint {path} does not exist or is not a file")
    if is_safetensors_file(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types for damaged files
            raise BenchxferError(
                f"cannot read {path}: damaged or truncated safetensors file ({_first_line(err)})"
            ) from None
        return RawCheckpoint(path, tensors, metadata)
    _check_looks_like_checkpoint(path)
    _check_declared_sizes(path)
    _check_storages(path, archs)
    try:
        with torch.serialization.safe_globals(SAFE_EXTRA_GLOBALS), warnings.catch_warnings():
            # torch warns on stderr about any pickle protocol but 2; the refusal below is the one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise BenchxferError(
            f"refused {path}: unpickling it needs {_culprit(err)}, which could run arbitrary code, "
            "so it was not loaded (only the BYOL Haiku pickle may be converted unsafely, with "
            "--format byol-haiku --trust)"
        ) from None
    except Exception as err:  # truncated zip, bad magic number, EOF, ...
        raise BenchxferError(
            f"cannot read {path}: truncated, damaged or not a PyTorch checkpoint ({_first_line(err)})"
        ) from None
    return RawCheckpoint(path, obj, None)


class Opaque:
    """Stands in for a class that a trusted pickle names but that is not installed (jax, haiku, byol).

    It keeps what the pickle gives it (constructor arguments and state) so that the converter can
    find the arrays inside.
    """

    _qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self._qualname}>"


def _opaque_class(module: str, name: str) -> type:
    def new(cls, *args: Any, **kwargs: Any):
        obj = object.__new__(cls)
        Opaque.__init__(obj, *args, **kwargs)
        return obj

    return type(name, (Opaque,), {"_qualname": f"{module}.{name}", "__new__": new})


class _TrustedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _opaque_class(module, name)


def trusted_unpickle(path: str | Path) -> Any:
    """Unpickle ``path`` with the full (code-running) pickle machinery. Call only with the user's consent."""
    path = Path(path)
    if not path.is_file():
        raise BenchxferError(f"checkpoint {path} does not exist or is not a file")
    try:
        with open(path, "rb") as f:
            return _TrustedUnpickler(f).load()
    except Exception as err:
        raise BenchxferError(f"cannot unpickle {path}: {_first_line(err)}") from None

"""The zoo folder: canonical backbone files and the index that records them.

    <zoo>/<name>.safetensors   one canonical backbone per init (target architecture's key names)
    <zoo>/zoo.json             the index: per init its arch, source format, SHA-256, normalisation,
                               provenance; written atomically under a lock

The folder is ``benchxfer.paths.zoo_dir()``: ``~/.benchxfer/zoo``, ``$BENCHXFER_ZOO``, or ``--zoo DIR``.
Built-in inits (``inits.py``) get their file with ``zoo import``; local inits (``benchxfer pretrain``,
the demo, or ``zoo import`` under a new name) live only in the index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from benchxfer.errors import Absent, BenchxferError
from benchxfer.paths import check_folder, zoo_dir
from benchxfer.zoo.backbone import apply_backbone, check_backbone, is_head_key
from benchxfer.zoo.formats import CANONICAL, Backbone, read_backbone
from benchxfer.zoo.inits import IMAGENET_MEAN, IMAGENET_STD, INITS, InitCfg, canonical_filename

INDEX_FILE = "zoo.json"
INDEX_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

ZooArg = str | os.PathLike | None


def index_path(zoo: ZooArg = None) -> Path:
    return zoo_dir(zoo) / INDEX_FILE


def read_index(zoo: ZooArg = None) -> dict[str, dict[str, Any]]:
    """name -> record of every init the zoo folder's index knows (empty if there is no index)."""
    path = index_path(zoo)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BenchxferError(f"zoo index {path} line {err.lineno}: invalid JSON ({err.msg}); fix or delete it") from None
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION or not isinstance(data.get("inits"), dict):
        raise BenchxferError(f"zoo index {path}: expected {{'version': {INDEX_VERSION}, 'inits': {{...}}}}")
    return data["inits"]


@contextlib.contextmanager
def _edit_index(zoo: ZooArg) -> Iterator[dict[str, dict[str, Any]]]:
    """Read-modify-write the index under an exclusive lock; the new index replaces the old atomically."""
    path = index_path(zoo)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".zoo.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = read_index(zoo)
        yield entries
        tmp = path.with_name(f".{INDEX_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": INDEX_VERSION, "inits": entries}, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_to_cfg(name: str, rec: dict[str, Any]) -> InitCfg:
    try:
        return InitCfg(
            name=name, arch=rec["arch"], fmt=rec.get("fmt", CANONICAL), filename=rec["filename"],
            mean=tuple(rec.get("mean", IMAGENET_MEAN)), std=tuple(rec.get("std", IMAGENET_STD)),
            description=rec.get("description", ""), source=rec.get("source", ""), sha256=rec.get("sha256"),
        )
    except KeyError as err:
        raise BenchxferError(f"zoo index {INDEX_FILE}: init {name!r} lacks key {err.args[0]!r}") from None


def get_init(name: str, zoo: ZooArg = None) -> InitCfg:
    """The built-in or local init ``name`` (with its recorded SHA-256 once imported)."""
    return _init_of(name, read_index(zoo))


def _init_of(name: str, entries: dict[str, dict[str, Any]]) -> InitCfg:
    """Init ``name`` as the index ``entries`` (read once by the caller) record it."""
    if name in INITS:
        cfg = INITS.get(name)
        rec = entries.get(name)
        return dataclasses.replace(cfg, sha256=rec.get("sha256")) if rec else cfg
    if name in entries:
        return _record_to_cfg(name, entries[name])
    known = sorted(set(INITS.names()) | set(entries))
    raise BenchxferError(f"unknown init {name!r}; known: {', '.join(known)}")


def list_inits(zoo: ZooArg = None) -> list[InitCfg]:
    """Every built-in init, then every local one, each sorted by name (the index read once)."""
    entries = read_index(zoo)
    local = sorted(n for n in entries if n not in INITS)
    return [_init_of(n, entries) for n in INITS.names()] + [_record_to_cfg(n, entries[n]) for n in local]


def resolve_init(name: str, zoo: ZooArg = None) -> tuple[InitCfg, Path | None]:
    """The init and the file to load (None for scratch); a missing file says how to get it."""
    cfg = get_init(name, zoo)
    if cfg.filename is None:
        return cfg, None
    path = zoo_dir(zoo) / cfg.filename
    if not path.is_file():
        hint = f" (published at {cfg.source})" if cfg.source.startswith("http") else ""
        trust = " --trust" if cfg.fmt == "byol-haiku" else ""
        raise Absent(
            f"init {name!r}: file {path} is missing; download its checkpoint{hint} and run "
            f"`benchxfer zoo import {name} FILE{trust}`"
        )
    return cfg, path


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise BenchxferError(
            f"init name {name!r} is not allowed; use lower-case letters, digits, '.', '_' or '-' (at most 64)"
        )


def _write_canonical(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write ``state`` as safetensors atomically; return its SHA-256."""
    tmp, digest = _write_temporary(path, state, metadata)
    os.replace(tmp, path)
    return digest


def _write_temporary(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[Path, str]:
    """``state`` as safetensors in a temporary file beside ``path`` (this process's own); its SHA-256."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata=metadata)
        _sort_metadata(tmp)
        return tmp, sha256_file(tmp)
    except (OSError, SafetensorError) as err:  # a full disk reaches us as safetensors' own error
        tmp.unlink(missing_ok=True)
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip() or type(err).__name__
        raise BenchxferError(f"zoo folder {path.parent}: cannot write {path.name} ({why}); free space there, or "
                             "use another zoo (--zoo DIR or $BENCHXFER_ZOO)") from None
    except BaseException:  # Ctrl-C, or anything else: no hidden temporary file is left in the zoo
        tmp.unlink(missing_ok=True)
        raise


def _sort_metadata(path: Path) -> None:
    """safetensors writes its ``__metadata__`` in a hash map's order, which differs from run to run: the same
    backbone would get another SHA-256 on each import. The header is rewritten in place with the metadata's keys
    sorted (the same bytes, reordered: its length does not change)."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
        header = json.loads(raw)
        if not isinstance(header.get("__metadata__"), dict):
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > n:
            return  # not the layout expected: leave safetensors' own header
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


def _check_finite(file: Path, state: dict[str, torch.Tensor]) -> None:
    """A backbone whose weights hold NaN or inf would train to NaN: refused before it enters the zoo."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise BenchxferError(f"{file}: {len(bad)} of {len(state)} tensors hold non-finite values (NaN or inf), "
                             f"the first: {bad[0]}; refusing to import it (check the download, or the run that "
                             "saved it)")


def save_local_init(
    name: str,
    state: dict[str, torch.Tensor],
    arch: str,
    provenance: dict[str, Any],
    zoo: ZooArg = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    description: str = "",
    force: bool = True,
) -> Path:
    """Register ``state`` (a backbone of ``arch``; a classifier head in it is dropped) as init ``name``. Without
    ``force``, a name the zoo holds for something else (an import, another pre-training: see :func:`claimed`) is
    refused under the index's lock, and the file and its record stay as they were."""
    _check_name(name)
    if name in INITS:
        raise BenchxferError(f"init name {name!r} is a built-in init; choose another name for a local init")
    backbone = {k: v for k, v in state.items() if not is_head_key(k)}
    check_backbone(backbone, arch, None, f"local init {name!r}")
    provenance = json.loads(json.dumps(provenance, sort_keys=True, default=str))
    path = zoo_dir(zoo) / canonical_filename(name)
    tmp, digest = _write_temporary(path, backbone, {"format": CANONICAL, "arch": arch, "name": name})
    try:
        with _edit_index(zoo) as entries:
            if not force and (there := claimed(name, provenance.get("trial_key"), zoo, entries)) is not None:
                raise BenchxferError(f"init {name!r} is already in the zoo ({there}); pass --force to replace it")
            os.replace(tmp, path)
            entries[name] = {
                "arch": arch, "fmt": CANONICAL, "filename": path.name, "sha256": digest,
                "mean": list(mean), "std": list(std), "description": description or f"local init ({arch})",
                "source": str(provenance.get("source") or json.dumps(provenance, sort_keys=True)),
                "provenance": provenance, "local": True,
            }
    finally:
        tmp.unlink(missing_ok=True)
    return path


def claimed(name: str, trial_key: str | None, zoo: ZooArg = None,
            entries: dict[str, dict[str, Any]] | None = None) -> str | None:
    """What the zoo holds under ``name`` when it is not the output of the pre-training run ``trial_key`` (an
    import, or another pre-training's backbone): its checksum, date and source; None when the name is free or
    holds that same run's backbone (a pre-training run again after a kill, or exported twice)."""
    there = _already_there(name, zoo, entries)
    if there is None:
        return None
    rec = (read_index(zoo) if entries is None else entries)[name]
    made_by = (rec.get("provenance") or {}).get("trial_key") if isinstance(rec.get("provenance"), dict) else None
    if trial_key is not None and made_by == trial_key:
        return None
    return there


def _already_there(name: str, zoo: ZooArg, entries: dict[str, dict[str, Any]] | None = None) -> str | None:
    """What the zoo holds under ``name`` (checksum, date, source), or None when it holds nothing."""
    rec = (read_index(zoo) if entries is None else entries).get(name)
    if not rec or not rec.get("filename"):
        return None
    path = zoo_dir(zoo) / rec["filename"]
    if not path.exists():  # a record without its file: nothing to lose
        return None
    date = rec.get("imported_at")
    if not date:
        date = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")
    source = rec.get("source_file") or rec.get("source") or "unknown"
    return f"sha256 {str(rec.get('sha256', '?'))[:16]}…, imported {date or 'at an unknown date'}, from {source}"


def import_init(name: str, file: str | Path, fmt: str | None = None, trust: bool = False,
                zoo: ZooArg = None, force: bool = False) -> tuple[InitCfg, Path, Backbone]:
    """Convert a published checkpoint once into the zoo's canonical file for ``name``; record its SHA-256.

    For a built-in init the format defaults to the init's own and the architecture must be the init's.
    Any other name becomes a local init whose architecture is read from the file. An init already in the
    zoo is replaced only with ``force``.
    """
    file = Path(file)
    if not force and (there := _already_there(name, zoo)) is not None:
        raise BenchxferError(f"init {name!r} is already in the zoo ({there}); pass --force to replace it")
    builtin = INITS.get(name) if name in INITS else None
    if builtin is not None and builtin.fmt is None:
        raise BenchxferError(f"init {name!r} is a random initialisation; it has no file to import")
    if builtin is None:
        _check_name(name)
    check_folder(zoo_dir(zoo), "zoo folder")
    fmt = fmt or (builtin.fmt if builtin else None)
    backbone = read_backbone(file, fmt, arch=builtin.arch if builtin else None, trust=trust)
    _check_finite(file, backbone.state)
    path = zoo_dir(zoo) / canonical_filename(name)
    tmp, digest = _write_temporary(path, backbone.state, {"format": CANONICAL, "arch": backbone.arch, "name": name})
    try:
        record: dict[str, Any] = {
            "arch": backbone.arch, "fmt": backbone.fmt, "filename": path.name, "sha256": digest,
            "source_file": str(file.resolve()), "source_sha256": sha256_file(file),
            "imported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        # the file and its record change together, under the index's lock: of two imports of one name at once,
        # the second sees the first's record and refuses (without --force), so the file and zoo.json agree
        with _edit_index(zoo) as entries:
            if not force and (there := _already_there(name, zoo, entries)) is not None:
                raise BenchxferError(f"init {name!r} is already in the zoo ({there}); pass --force to replace it")
            if builtin is None:
                old = entries.get(name, {})
                record.update(mean=old.get("mean", list(IMAGENET_MEAN)), std=old.get("std", list(IMAGENET_STD)),
                              description=old.get("description", f"imported from {file.name}"),
                              source=str(file.resolve()), provenance={"imported_from": str(file.resolve())},
                              local=True)
            os.replace(tmp, path)
            entries[name] = record
    finally:
        tmp.unlink(missing_ok=True)
    return get_init(name, zoo), path, backbone


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    message: str


def verify_init(name: str, zoo: ZooArg = None) -> Check:
    """Check one init: its file is present, its SHA-256 is the recorded one, and it loads into its arch."""
    from benchxfer.models import build_model

    cfg = get_init(name, zoo)
    if cfg.filename is None:
        return Check(name, True, "random initialisation, nothing to check")
    path = zoo_dir(zoo) / cfg.filename
    if not path.is_file():
        return Check(name, False, f"missing {path}; run `benchxfer zoo import {name} FILE`")
    if not cfg.sha256:
        return Check(name, False, f"no SHA-256 recorded for {path}; re-import it with `benchxfer zoo import`")
    digest = sha256_file(path)
    if digest != cfg.sha256:
        return Check(name, False, f"checksum mismatch for {path}: {digest[:12]}... is not the recorded "
                                  f"{cfg.sha256[:12]}...")
    try:
        backbone = read_backbone(path, CANONICAL, arch=cfg.arch)
        loaded = apply_backbone(build_model(cfg.arch, "multiclass", 2), backbone.state)
    except BenchxferError as err:
        return Check(name, False, str(err))
    return Check(name, True, f"{len(loaded)} tensors load into {cfg.arch}; sha256 {digest[:12]}...")


def verify_inits(name: str | None = None, zoo: ZooArg = None) -> list[Check]:
    """Verify ``name``, or every init that has a file or a record in the zoo folder."""
    if name is not None:
        return [verify_init(name, zoo)]
    entries = read_index(zoo)
    folder = zoo_dir(zoo)
    names = [c.name for c in list_inits(zoo)
             if c.filename and (c.name in entries or (folder / c.filename).is_file())]
    return [verify_init(n, zoo) for n in names]

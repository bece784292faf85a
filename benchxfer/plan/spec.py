"""The sweep file read: YAML with bounded size, depth and aliases and no repeated keys (:func:`read_yaml`, also
the pre-training file's reader), handed to the schema.

A sweep file is YAML (``docs/sweep-file.md`` documents every key). :func:`load_spec` reads it and
``benchxfer.plan.schema.sweep_spec`` checks it in one pass into typed records (:class:`SweepSpec`);
``benchxfer.plan.planning`` resolves every init, dataset root and recipe and expands the grid into
:class:`benchxfer.trial.Trial` objects. Both run before Ray starts, so that a bad sweep fails in seconds with one line
that names the file, the key and the allowed values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import yaml

from benchxfer.errors import BenchxferError
from benchxfer.plan.schema import SweepSpec, sweep_spec
from benchxfer.textfile import looks_utf16, open_problem, utf8_text, utf16

# what a YAML file may be before it is parsed fully
MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 32
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 100_000


# --- parsing ---------------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, with two mends: a repeated key is an error (not the last one winning), and
    ``1e-3`` is a number (YAML 1.1 reads a float without a dot as a string)."""

    yaml_implicit_resolvers: ClassVar[dict] = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base loader reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _text(path: str, p: Path) -> str:
    """The file as text, bounded in size, without a BOM; binary files are refused."""
    try:
        size = p.stat().st_size
        if size > MAX_YAML_BYTES:
            raise BenchxferError(f"{path}: {size} bytes; a sweep or pre-training file may have at most "
                                 f"{MAX_YAML_BYTES} bytes")
        raw = p.read_bytes()
    except PermissionError:
        raise BenchxferError(f"{path}: cannot read it (permission denied)") from None
    except IsADirectoryError:
        raise BenchxferError(f"{path}: is a folder, not a YAML file") from None
    if looks_utf16(raw):
        raise utf16(path, "a sweep or pre-training file")
    if b"\x00" in raw:
        raise BenchxferError(f"{path}: not a text file (it holds NUL bytes); expected YAML")
    return utf8_text(path, raw, "a sweep or pre-training file")


def _check_shape(path: str, text: str) -> None:
    """Bound nesting depth and aliases from the event stream, before anything is built."""
    depth = aliases = nodes = 0
    sizes: dict[str, int] = {}  # anchor -> nodes under it, aliases expanded
    open_: list[tuple[str | None, int]] = []  # the collections being read: (anchor, nodes before them)
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise BenchxferError(f"{path}: line {event.start_mark.line + 1}: nested more than "
                                     f"{MAX_YAML_DEPTH} levels deep")
            open_.append((event.anchor, nodes))
            nodes += 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            anchor, before = open_.pop()
            if anchor is not None:
                sizes[anchor] = nodes - before
        elif isinstance(event, yaml.ScalarEvent):
            nodes += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            nodes += sizes.get(event.anchor, 1)
            if aliases > MAX_YAML_ALIASES:
                raise BenchxferError(f"{path}: line {event.start_mark.line + 1}: more than {MAX_YAML_ALIASES} "
                                     "YAML aliases (*name); write the values out")
        if nodes > MAX_YAML_NODES:
            raise BenchxferError(f"{path}: line {event.start_mark.line + 1}: the document expands to more than "
                                 f"{MAX_YAML_NODES} values (YAML aliases repeat what they name)")


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise BenchxferError(f"{path}: is a folder, not a YAML file")
    if not p.is_file():
        if p.is_symlink():  # a loop, or a link to nothing
            try:
                os.stat(p)
            except OSError as err:
                raise open_problem(p, err, "YAML file") from None
        raise BenchxferError(f"{path}: no such file")
    text = _text(str(path), p)
    try:
        _check_shape(str(path), text)
        doc = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BenchxferError(f"{path}: YAML syntax error at {where}{problem}") from None
    except RecursionError:
        raise BenchxferError(f"{path}: nested too deeply") from None
    if not isinstance(doc, dict):
        raise BenchxferError(f"{path}: expected a mapping of keys at the top level, got {type(doc).__name__}")
    return doc


def load_spec(path: str | Path, base: str | Path | None = None) -> SweepSpec:
    """Read a sweep file and hand it to the schema (:func:`benchxfer.plan.schema.sweep_spec`: names, types, values,
    in one pass). No data or zoo access. Relative roots and pre-training files are found from ``base`` (default:
    the file's folder; a sweep's own copy passes the folder of the file it was started from)."""
    return sweep_spec(read_yaml(path), str(path), base)

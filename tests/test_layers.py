"""The shape of benchxfer's imports, computed from its source with ``ast`` (nothing is imported):

- every module has an entry in the layer order and every entry is a module;
- no import circles among benchxfer's modules (imports inside functions count; ``if TYPE_CHECKING:`` ones do not;
  a string that names a benchxfer module -- ``"benchxfer.x"``, ``"benchxfer.x:attr"`` -- counts as an import of
  it: that is how ``importlib.import_module`` and the lazy tables of ``cli``, ``data`` and ``zoo`` import);
- no import that points back up the layer order, which is read from the ``layers`` block of ARCHITECTURE.md (the
  one place it is written), lowest first;
- no use of Ray's private API (a ``_private`` or ``impl`` module imported or written as a string, an ``_attribute``
  of a Ray object), but the couplings listed in :data:`ACCEPTED_RAY_STRINGS`, each pinned to Ray's source;
- no task-name string compares (``== "segmentation"``) outside ``tasks.py``: code asks the task registry.

Each check takes a :class:`Source` (a package folder, parsed); ``test_each_check_finds_its_fault`` writes a small
package with one fault per check and asserts that each check reports it.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "benchxfer"
TASK_NAMES = frozenset({"multilabel", "binary", "multiclass", "segmentation", "pretrain"})
# Ray private names benchxfer writes as strings on purpose, each with the reason and pinned by
# test_accepted_ray_strings_are_in_ray: string -> why
ACCEPTED_RAY_STRINGS = {
    "ray._private.authentication.authentication_token_setup":
        "cluster.start: the logger of Ray's notice that token authentication is on, set to ERROR",
}


def read_layers(text: str) -> tuple[str, ...]:
    """The layer order of the ```layers block of ARCHITECTURE.md, lowest first: the package itself, then every
    name in reading order (``# ...`` is a comment), each prefixed with the package's name."""
    blocks = re.findall(r"^```layers\n(.*?)^```", text, re.M | re.S)
    if len(blocks) != 1:
        raise AssertionError(f"ARCHITECTURE.md has {len(blocks)} ```layers blocks; want 1")
    names = [w for line in blocks[0].splitlines() for w in line.split("#")[0].split()]
    return (PACKAGE, *(f"{PACKAGE}.{n}" for n in names))


LAYERS = read_layers((REPO / "ARCHITECTURE.md").read_text())


@dataclass
class Source:
    """A package's modules (dotted name -> file) and their parsed trees."""

    modules: dict[str, Path]
    trees: dict[str, ast.Module] = field(repr=False)

    @classmethod
    def scan(cls, package: Path) -> Source:
        modules = {}
        for path in package.rglob("*.py"):
            parts = list(path.relative_to(package.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
        return cls(modules, {n: ast.parse(p.read_text(), str(p)) for n, p in modules.items()})

    def where(self, name: str) -> Path:
        return self.modules[name].relative_to(self.modules[PACKAGE].parent.parent)

    def graph(self) -> dict[str, dict[str, int]]:
        return {name: imports_of(self, name) for name in self.modules}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for n in node.body:
                skip |= {id(x) for x in ast.walk(n)}
    return skip


def _owner(src: Source, dotted: str) -> str | None:
    """The module that ``dotted`` (a module, or a name inside one) is, or is in."""
    while dotted and dotted not in src.modules:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imports_of(src: Source, name: str) -> dict[str, int]:
    """The package's modules ``name`` imports (at any depth of its code, TYPE_CHECKING blocks left out; a string
    naming a module counts), each with the first line that imports it."""
    tree, path = src.trees[name], src.modules[name]
    skip = _type_checking_nodes(tree)
    found: dict[str, int] = {}
    by_name = _imports_by_name(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            for a in node.names:  # `from pkg import module` imports the module; `from mod import name`, mod
                targets.append(f"{base}.{a.name}" if f"{base}.{a.name}" in src.modules else base)
        elif isinstance(node, ast.Constant) and (id(node) in by_name or (by_name == {-1} and _names_module(src, node))):
            targets = [str(node.value).split(":")[0]]
        for t in targets:
            owner = _owner(src, t)
            if owner and owner != name and t.split(".")[0] == PACKAGE:
                found.setdefault(owner, node.lineno)
    return found


IMPORTERS = ("import_module", "__import__")


def _imports_by_name(tree: ast.Module) -> set[int]:
    """The string constants given to ``importlib.import_module`` / ``__import__`` (their ids); ``{-1}`` where a name
    is computed (``import_module(table[name])``): then every string of the module that names one of the package's
    modules counts, as the lazy tables of ``cli``, ``data`` and ``zoo`` name them."""
    given: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in IMPORTERS and node.args:
            arg = node.args[0]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                return {-1}
            given.add(id(arg))
    return given


def _names_module(src: Source, node: ast.AST) -> bool:
    """``"benchxfer.x"`` or ``"benchxfer.x:attr"`` (a module and a name in it) for a module of ``src``."""
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and re.fullmatch(r"[\w.]+(:\w+)?", node.value) is not None and node.value.split(":")[0] in src.modules)


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def rank(layers: tuple[str, ...], module: str) -> int:
    """A module's entry: the longest entry that names it or a package above it."""
    best = max((p for p in layers if module == p or module.startswith(p + ".")), key=len)
    return layers.index(best)


def unplaced(src: Source, layers: tuple[str, ...]) -> list[str]:
    """Modules that sit only in the bare package's entry, and entries that are no module."""
    return ([m for m in sorted(src.modules) if m != PACKAGE and rank(layers, m) == 0]
            + [f"{e} (no such module)" for e in layers if e not in src.modules])


def back_up_imports(src: Source, layers: tuple[str, ...], graph: dict[str, dict[str, int]]) -> list[str]:
    return [f"{m} -> {t} (line {line})" for m, targets in sorted(graph.items()) for t, line in targets.items()
            if rank(layers, t) > rank(layers, m)]


def _ray_names(tree: ast.Module) -> set[str]:
    """Local names bound to Ray modules or objects imported from Ray (``import ray``, ``from ray.x import Y``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "ray"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray":
            names |= {a.asname or a.name for a in node.names}
    return names


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _private_ray_module(dotted: str) -> bool:
    parts = dotted.split(".")
    return parts[0] == "ray" and any(_private(p) or p == "impl" for p in parts)


def private_ray_uses(src: Source, accepted: dict[str, str] | None = None) -> list[str]:
    """Ray's private modules imported (``ray._private``, ``ray.tune.impl``) or written as a string (a logger's
    name, an ``importlib`` target) unless ``accepted``, private attributes reached from a Ray name
    (``ray._private.worker``, ``ray.x._y``), and private attributes of Ray objects: ``._name`` on anything but
    ``self``/``cls``, in a module that uses Ray, and ``self._name`` in a class with a Ray base class."""
    accepted = ACCEPTED_RAY_STRINGS if accepted is None else accepted
    out = []
    for name, tree in sorted(src.trees.items()):
        where = src.where(name)
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                mods = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value not in accepted
                  and re.fullmatch(r"ray(\.\w+)+", node.value) and _private_ray_module(node.value)):
                out.append(f"{where}:{node.lineno}: {node.value!r}")
            if any(_private_ray_module(m) for m in mods):
                out.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        ray_names = _ray_names(tree)
        if not ray_names:
            continue
        ray_classes = {id(c) for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                       and any(ast.unparse(b).split(".")[0] in ray_names for b in c.bases)}
        for cls in [c for c in ast.walk(tree) if id(c) in ray_classes]:
            for node in ast.walk(cls):
                if isinstance(node, ast.Attribute) and _private(node.attr) and ast.unparse(node.value) == "self":
                    out.append(f"{where}:{node.lineno}: self.{node.attr} in {cls.name}, a subclass of a Ray class")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                if ast.unparse(node.value) in ("self", "cls"):
                    continue
                out.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return out


def task_name_compares(src: Source) -> list[str]:
    """``x == "segmentation"``, ``x != "binary"``, ``x in ("multilabel", ...)`` anywhere but tasks.py."""
    out = []
    for name, tree in sorted(src.trees.items()):
        if name == f"{PACKAGE}.tasks":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for op, right in zip(node.ops, node.comparators):
                values = [node.left, right]
                if isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, (ast.Tuple, ast.List, ast.Set)):
                    values = list(right.elts)
                elif not isinstance(op, (ast.Eq, ast.NotEq)):
                    continue
                if any(isinstance(v, ast.Constant) and v.value in TASK_NAMES for v in values):
                    out.append(f"{src.where(name)}:{node.lineno}: {ast.unparse(node)}")
                    break
    return out


SOURCE = Source.scan(REPO / PACKAGE)
GRAPH = SOURCE.graph()


def test_every_module_has_a_layer_and_every_layer_is_a_module():
    """A new top-level module must be placed in ARCHITECTURE.md's block (only the package itself sits in the
    bare "benchxfer"), and the block names no module that is gone."""
    assert unplaced(SOURCE, LAYERS) == []
    assert len(SOURCE.modules) > 60 and len(LAYERS) > 30  # the walk found the package, the block its names


def test_no_import_circles():
    assert circles(GRAPH) == []


def test_no_import_points_back_up_the_layers():
    assert back_up_imports(SOURCE, LAYERS, GRAPH) == []


def test_lazy_imports_by_name_are_seen():
    """The imports that only importlib makes are edges of the graph: the command line's lazy table, the zoo's."""
    assert "benchxfer.commands" in GRAPH["benchxfer.cli"] and "benchxfer.report.cli" in GRAPH["benchxfer.cli"]
    assert "benchxfer.zoo.store" in GRAPH["benchxfer.zoo"]


def test_no_private_ray_api():
    assert private_ray_uses(SOURCE) == []


def test_accepted_ray_strings_are_in_ray():
    """Each accepted private name is still what benchxfer takes it for: a module of the installed Ray that logs
    through ``logging.getLogger(__name__)``, and a string benchxfer's source still holds (else drop it here)."""
    text = "\n".join(p.read_text() for p in SOURCE.modules.values())
    for name in ACCEPTED_RAY_STRINGS:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"{name}: no longer a module of Ray"
        assert "logging.getLogger(__name__)" in Path(spec.origin).read_text(), name
        assert repr(name).replace("'", '"') in text, f"{name}: no longer used; remove it from ACCEPTED_RAY_STRINGS"


def test_no_task_name_compares_outside_the_task_registry():
    assert task_name_compares(SOURCE) == []


PROBE = {  # a package with one fault per check (file -> source)
    "__init__.py": "",
    "low.py": "def later():\n    import importlib\n    return importlib.import_module('benchxfer.high')\n",
    "high.py": "from benchxfer import low\n",
    "stray.py": "",
    "pair/__init__.py": "",
    "pair/a.py": "def f():\n    from benchxfer.pair import b\n",
    "pair/b.py": ("import importlib\nLAZY = {'f': 'benchxfer.pair.a:f'}\n"
                  "def get(n):\n    return importlib.import_module(LAZY[n].split(':')[0])\n"),
    "raylike.py": ("import logging\nimport ray\nfrom ray.tune.impl.placeholder import x\n"
                   "class S(ray.tune.Callback):\n    def f(self):\n        self._max_t = 1\n"
                   "def g(s):\n    return s.inner._max_t, ray._private.worker\n"
                   "logging.getLogger('ray._private.worker')\n"),
    "tasks.py": "ok = t == 'segmentation'\n",
    "compare.py": "bad = t == 'segmentation'\n",
}


def test_each_check_finds_its_fault(tmp_path):
    """Each check reports the fault written for it into a small package (so that an empty list above means
    something), and finds nothing where there is none."""
    for rel, text in PROBE.items():
        (tmp_path / PACKAGE / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / PACKAGE / rel).write_text(text)
    src = Source.scan(tmp_path / PACKAGE)
    layers = read_layers("```layers\nlow pair  # a comment\nhigh tasks compare raylike gone\n```\n")
    assert layers == ("benchxfer", "benchxfer.low", "benchxfer.pair", "benchxfer.high", "benchxfer.tasks",
                      "benchxfer.compare", "benchxfer.raylike", "benchxfer.gone")
    assert unplaced(src, layers) == ["benchxfer.stray", "benchxfer.gone (no such module)"]
    graph = src.graph()
    assert circles(graph) == [["benchxfer.high", "benchxfer.low"], ["benchxfer.pair.a", "benchxfer.pair.b"]]
    assert back_up_imports(src, layers, graph) == ["benchxfer.low -> benchxfer.high (line 3)"]  # by importlib
    assert private_ray_uses(src) == [
        "benchxfer/raylike.py:3: from ray.tune.impl.placeholder import x",
        "benchxfer/raylike.py:9: 'ray._private.worker'",
        "benchxfer/raylike.py:6: self._max_t in S, a subclass of a Ray class",
        "benchxfer/raylike.py:8: s.inner._max_t",
        "benchxfer/raylike.py:8: ray._private",
    ]
    assert private_ray_uses(src, {"ray._private.worker": "accepted"})[1:2] == [
        "benchxfer/raylike.py:6: self._max_t in S, a subclass of a Ray class"]  # an accepted string is not listed
    assert task_name_compares(src) == ["benchxfer/compare.py:1: t == 'segmentation'"]
    with pytest.raises(AssertionError, match="0 ```layers blocks"):
        read_layers("no block here")

"""The shape of benchxfer's imports, computed from its source with ``ast`` (nothing is imported):

- no import circles among benchxfer's modules (imports inside functions count; ``if TYPE_CHECKING:`` ones do not);
- no import that points back up the declared layer order (:data:`LAYERS`, lowest first);
- no use of Ray's private API (a ``_private`` or ``impl`` module, an ``_attribute`` of a Ray object);
- no task-name string compares (``== "segmentation"``) outside ``tasks.py``: code asks the task registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parents[1] / "benchxfer"

# Lowest first. A module belongs to the longest prefix that names it; it may import from its own entry and the
# entries below. Modules of one entry (e.g. all of benchxfer.data) may import each other, but never in a circle.
LAYERS: tuple[str, ...] = (
    "benchxfer", "benchxfer.errors", "benchxfer.registry", "benchxfer.paths", "benchxfer.textfile", "benchxfer.locks",
    "benchxfer.tasks",
    "benchxfer.data", "benchxfer.models", "benchxfer.zoo", "benchxfer.gpu_memory",
    "benchxfer.recipes",
    "benchxfer.trialdir", "benchxfer.tracking",
    "benchxfer.train", "benchxfer.disk",
    "benchxfer.schema", "benchxfer.spec", "benchxfer.environment",
    "benchxfer.pretraining", "benchxfer.planning",
    "benchxfer.results", "benchxfer.summary", "benchxfer.figures", "benchxfer.report", "benchxfer.report_mlflow",
    # the Ray side: the session and what a trial asks for, the seam, the console, the driver, the lr search
    "benchxfer.cluster", "benchxfer.tunespace", "benchxfer.console", "benchxfer.sweep", "benchxfer.cellsearch",
    "benchxfer.search",
    "benchxfer.runner",
    # commands
    "benchxfer.commands", "benchxfer.report_cli", "benchxfer.data.cli", "benchxfer.zoo.cli", "benchxfer.cli",
)
TASK_NAMES = frozenset({"multilabel", "binary", "multiclass", "segmentation", "pretrain"})


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


TREES = _trees()


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for n in node.body:
                skip |= {id(x) for x in ast.walk(n)}
    return skip


def _owner(dotted: str) -> str | None:
    """The benchxfer module that ``dotted`` (a module, or a name inside one) is, or is in."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imports_of(name: str) -> dict[str, int]:
    """The benchxfer modules ``name`` imports (at any depth of its code, TYPE_CHECKING blocks left out), each
    with the first line that imports it."""
    tree, path = TREES[name], MODULES[name]
    skip = _type_checking_nodes(tree)
    found: dict[str, int] = {}
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
                targets.append(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
        for t in targets:
            owner = _owner(t)
            if owner and owner != name and t.startswith("benchxfer"):
                found.setdefault(owner, node.lineno)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def circles() -> list[list[str]]:
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
        for w in GRAPH[v]:
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

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def rank(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS.index(best)


def back_up_imports() -> list[str]:
    return [f"{m} -> {t} (line {line})" for m, targets in sorted(GRAPH.items()) for t, line in targets.items()
            if rank(t) > rank(m)]


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


def private_ray_uses() -> list[str]:
    """Ray's private modules imported (``ray._private``, ``ray.tune.impl``), private attributes reached from a Ray
    name (``ray._private.worker``, ``ray.x._y``), and private attributes of Ray objects: ``._name`` on anything
    but ``self``/``cls``, in a module that uses Ray, and ``self._name`` in a class with a Ray base class."""
    out = []
    for name, tree in sorted(TREES.items()):
        where = MODULES[name].relative_to(ROOT.parent)
        for node in ast.walk(tree):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                mods = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            if any(m.split(".")[0] == "ray" and any(_private(p) or p == "impl" for p in m.split(".")) for m in mods):
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
                base = ast.unparse(node.value)
                if base in ("self", "cls"):
                    continue
                out.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return out


def task_name_compares() -> list[str]:
    """``x == "segmentation"``, ``x != "binary"``, ``x in ("multilabel", ...)`` anywhere but tasks.py."""
    out = []
    for name, tree in sorted(TREES.items()):
        if name == "benchxfer.tasks":
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
                    out.append(f"{MODULES[name].relative_to(ROOT.parent)}:{node.lineno}: {ast.unparse(node)}")
                    break
    return out


def test_every_module_has_a_layer():
    """A new top-level module must be placed in LAYERS (only the package itself sits in the bare "benchxfer")."""
    assert [m for m in sorted(MODULES) if m != "benchxfer" and rank(m) == 0] == []
    assert len(MODULES) > 60  # the walk found the package


def test_no_import_circles():
    assert circles() == []


def test_no_import_points_back_up_the_layers():
    assert back_up_imports() == []


def test_no_private_ray_api():
    assert private_ray_uses() == []


def test_no_task_name_compares_outside_the_task_registry():
    assert task_name_compares() == []


def test_the_checks_see_what_they_look_for():
    """Each check finds its fault in a piece of code made for it (so that an empty list above means something)."""
    bad = ast.parse("import ray\nfrom ray.tune.impl.placeholder import x\n"
                    "class S(ray.tune.Callback):\n    def f(self):\n        self._max_t = 1\n"
                    "def g(s):\n    return s.inner._max_t, ray._private.worker, t == 'segmentation'\n")
    saved = dict(TREES), dict(MODULES)
    try:
        TREES["benchxfer.zz_probe"] = bad
        MODULES["benchxfer.zz_probe"] = ROOT / "zz_probe.py"
        uses = private_ray_uses()
        compares = task_name_compares()
    finally:
        TREES.clear(), TREES.update(saved[0])
        MODULES.clear(), MODULES.update(saved[1])
    probe = [u for u in uses if "zz_probe" in u]
    assert len(probe) == 4, probe  # the impl import, self._max_t, s.inner._max_t, ray._private
    assert [c for c in compares if "zz_probe" in c] == ["benchxfer/zz_probe.py:7: t == 'segmentation'"]
    graph = {"a": {"b": 1}, "b": {"a": 1}, "c": {"a": 1}}
    saved_graph = dict(GRAPH)
    try:
        GRAPH.clear(), GRAPH.update(graph)
        assert circles() == [["a", "b"]]
    finally:
        GRAPH.clear(), GRAPH.update(saved_graph)

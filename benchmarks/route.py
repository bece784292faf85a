"""The route of a sweep file through benchxfer's code, from ``benchxfer sweep FILE`` to the report (issue 32's
measure), computed from the source with ``ast``: nothing of benchxfer is imported or run.

**The walk.** It starts at ``benchxfer.commands.sweep`` (the click command's function) and goes through each call
in a function's body in the order Python evaluates them (statements in source order, a call's arguments before
the call, a comprehension's ``for``s before its element; both branches of an ``if``), depth first: a call that is
followed (below) and resolves to a benchxfer function not walked yet is walked at once, then the walk goes on
after the call. Each function is walked once; a later call to it is no stop. A call resolves when its callee is,
simply:

- a name bound in the function (its imports, its nested ``def``), in the functions around it, or in its module
  (``def``, ``class``, an import from a benchxfer module, followed through re-exports such as a package's
  ``__init__``); ``mod.f`` for an imported module, ``Class.f``;
- ``Class(...)``: its ``__init__`` and ``__post_init__`` (the class's own or a benchxfer base's; a dataclass that
  writes neither is no stop);
- a method ``x.f(...)`` where the class of ``x`` is known: ``self`` / ``cls``; a parameter or a local annotated with
  a benchxfer class (``X | None`` counts as ``X``); a local or module-level name assigned from a constructor or from
  a call whose return is annotated with a class; an attribute annotated in its class's body (a dataclass field) or
  assigned from a constructor in its ``__init__``; a ``@property`` read on such an object is a call too;
- a function, method or object with ``__call__`` passed as an argument: the callee's parameter is bound to it (so a
  callback is followed where it is called back), from the call that walks the callee; passed to a function walked
  before, or handed to a callable outside benchxfer (``tune.with_parameters``, ``threading.Thread``,
  ``sorted(key=...)``), it is taken to be called there, where it is passed;
- such a callable given to an annotated field when an object is made (a dataclass's fields by position or name,
  another class's by keyword: ``Shared(index, launch, env, finish)``, ``Runtime(finish=shared.finish)``): a later
  call of that field on an object of the class calls it (the first one given; ``run.runtime.finish(...)``).

Not resolved (conservative: such a call is no stop): what a container holds (``for t in plan.trials``: ``t`` is
unknown; ``config["runtime"]``), an unannotated parameter of a function that only a library calls, the methods
other than ``__call__`` that a library calls on an object handed to it (a Tune callback's hooks,
``CellSearcher.suggest``, ``CellScheduler``'s), operators and dunders other than ``__call__`` (``in``, ``len``,
``with``'s ``__enter__``), ``super()``, names computed at run time (``importlib`` tables; registries' values:
``RECIPES.get(n).resolve()`` stops at ``Registry.get`` only), and any call into a library.

**Which calls are followed.** ``--all-calls``: every call that resolves. ``--follow-file`` (the default, issue
32's measure: its filer followed the file argument's value, not every call): only a call that passes the callee
something *derived* from the start's ``file`` parameter (``--file-argument``). In one pass over each function, in
the walk's order:

- ``file`` starts derived; in a callee, the parameters bound to derived arguments start derived (by position or
  keyword; a derived ``*xs`` every positional parameter it may reach, a derived ``**kw`` every one; an argument
  past the named parameters ``*args`` / ``**kwargs``), and ``self`` / ``cls`` when the object called on is;
- an expression is derived when it mentions a derived name (an attribute or item of a derived object is derived:
  ``spec.datasets``), except a call of a benchxfer function, whose value is derived when one of its ``return``
  (or ``yield``) expressions was derived in the walk of it (so ``n = f(spec)`` with ``f`` returning a constant
  leaves ``n`` underived); a constructor's object is derived when an argument is; a call into a library is
  derived when its callee or an argument is (``open(path)``, ``spec.items()``);
- a name becomes derived when it is bound to a derived value: ``=`` (each name of a tuple target), ``+=`` and the
  other augmented assignments, ``:=``, an annotated assignment, a ``for`` target from a derived iterable (a
  comprehension's too), ``with ... as`` a derived context; setting an attribute or item of an object to a derived
  value (``x.a = v``, ``x[k] = v``) derives ``x``; once derived, a name stays derived in that function's walk;
- a call is followed when its callee expression (``x`` of ``x.method()``, a derived callable) or one of its
  arguments is derived; a ``@property`` read is followed when its object is; a callable handed to a library
  call that is followed, or to a benchxfer function walked before, is walked with all its parameters derived
  (the library passes it what it was given);
- each function is still walked once, with the parameters derived at its first followed call; its return counts
  as derived from then on, as that walk found it (a function walked later with other derived parameters is not
  walked again);
- a nested function sees the derived names of the function around it (as they are when it is walked) that it
  does not bind itself, and is itself a derived callable when its body reads a name derived there
  (``tf("train")`` in ``build_data``, where ``tf`` reads the derived ``cfg``).

Not derived: a container filled by a method call (``xs.append(v)`` leaves ``xs`` as it was), a module-level name.

**The route** is the sequence of stops: a *stop* is entering a function for the first time, with its module; the
route *leaves* a module when the next stop is in another one. Each stop is made by a call site (file:line, caller
-> callee). Modules rank by ARCHITECTURE.md's ``layers`` block, lowest first (``tests/test_layers.py``'s ``rank``).

- A **climb** (back up) is a stop whose callee's module B differs from its caller's module A, ranks higher than A,
  and was entered earlier in the route and left since: a call from a lower module into a higher one it had
  already left -- what an inverted dependency looks like (a callback, an import back up).
- A **return up** is a stop in a module B that the route had entered and left before, where B ranks higher than
  the module of the stop before it: the route goes back up to a higher module it had already left, whoever the
  caller is (``spec.load_spec`` calling ``schema.check_name`` and then its own ``spec._parse_lr`` goes back up from
  ``schema`` to ``spec``). Every climb whose previous stop is in its caller's module is also a return up.
- **While the sweep file is read**: the stops under the first stop of ``benchxfer.plan.spec.load_spec`` (that
  function and everything walked from it).

    .venv/bin/python benchmarks/route.py [--follow-file | --all-calls] [--json] [--route] [--no-record]

Recording (without ``--json`` / ``--no-record``) writes both modes to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # the layering test's parser and layer order, reused
from test_layers import PACKAGE, Source, rank, read_layers  # noqa: E402

START = f"{PACKAGE}.commands:sweep"
FILE_ARGUMENT = "file"  # the start's parameter that holds the sweep file
READING = f"{PACKAGE}.plan.spec:load_spec"


# --- what a name or an expression is, statically -------------------------------------------------------------

@dataclass(frozen=True)
class Module:
    name: str


@dataclass(frozen=True)
class Cls:
    module: str
    qualname: str


@dataclass(frozen=True)
class Instance:
    cls: Cls


@dataclass(frozen=True)
class Fn:
    module: str
    qualname: str
    implicit_first: bool = False  # reached through an object or a class method: ``self``/``cls`` is given


Value = Module | Cls | Instance | Fn | None


def _strip_optional(node: ast.expr) -> ast.expr | None:
    """``X | None`` and ``Optional[X]`` -> ``X``; a union of two classes, a container -> None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        sides = [s for s in (node.left, node.right) if not (isinstance(s, ast.Constant) and s.value is None)]
        return _strip_optional(sides[0]) if len(sides) == 1 else None
    if isinstance(node, ast.Subscript) and ast.unparse(node.value).split(".")[-1] == "Optional":
        return _strip_optional(node.slice)
    return node if isinstance(node, (ast.Name, ast.Attribute)) else None


def _decorators(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    return {ast.unparse(d).split("(")[0].split(".")[-1] for d in node.decorator_list}


FUNCTION = (ast.FunctionDef, ast.AsyncFunctionDef)
COMPREHENSION = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


class Index:
    """Every function and class of a package by (module, qualname), and what each module's names are bound to."""

    def __init__(self, src: Source):
        self.src = src
        self.defs: dict[tuple[str, str], ast.AST] = {}
        self.quals: dict[int, str] = {}  # id of a def's node -> its qualname
        self.parents: dict[tuple[str, str], str] = {}  # function -> its enclosing function's qualname, if nested
        self.globals: dict[str, dict[str, ast.AST]] = {}  # module -> name -> the statement that binds it
        for module, tree in src.trees.items():
            self._collect(module, tree.body, "", None)
            binds: dict[str, ast.AST] = {}
            for stmt in _top_level(tree.body):
                for name in _bound_names(stmt):
                    binds.setdefault(name, stmt)  # the first binding: a later re-binding is not followed
            self.globals[module] = binds
        self._resolving: set[tuple[str, str]] = set()
        # a callable given to a field when an object is made (``Shared(..., finish)``): what that field is called as
        self.stored: dict[tuple[Cls, str], Value] = {}

    def _collect(self, module: str, body: list[ast.stmt], prefix: str, function: str | None) -> None:
        for node in body:
            if isinstance(node, (*FUNCTION, ast.ClassDef)):
                qual = f"{prefix}{node.name}"
                self.defs.setdefault((module, qual), node)
                self.quals.setdefault(id(node), qual)
                if function is not None:
                    self.parents[(module, qual)] = function
                inner = qual if isinstance(node, FUNCTION) else function
                self._collect(module, node.body, qual + ".", inner)
            else:  # a def inside an if/try/with/for at any depth
                for field_name in ("body", "orelse", "finalbody", "handlers"):
                    sub = getattr(node, field_name, None)
                    if isinstance(sub, list):
                        self._collect(module, [s for s in sub if isinstance(s, ast.AST)], prefix, function)

    # -- names

    def lookup(self, module: str, name: str) -> Value:
        """What ``name`` is in module ``module``'s namespace (a submodule counts: ``from pkg import mod``)."""
        key = (module, name)
        if key in self._resolving:
            return None
        self._resolving.add(key)
        try:
            stmt = self.globals.get(module, {}).get(name)
            if stmt is not None:
                return self.bound(module, name, stmt, self.global_value)
            if f"{module}.{name}" in self.src.modules:
                return Module(f"{module}.{name}")
            return None
        finally:
            self._resolving.discard(key)

    def global_value(self, module: str, name: str) -> Value:
        return self.lookup(module, name)

    def bound(self, module: str, name: str, stmt: ast.AST, scope) -> Value:
        """What ``stmt`` binds ``name`` to (``scope(module, name)`` evaluates the names it reads)."""
        if isinstance(stmt, (*FUNCTION, ast.ClassDef)):
            qual = self.quals.get(id(stmt))  # None: a def where the index does not look (a ``match`` case)
            return None if qual is None else (Fn if isinstance(stmt, FUNCTION) else Cls)(module, qual)
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            return self.imported(module, name, stmt)
        if isinstance(stmt, ast.AnnAssign):
            return self.instance_of(module, stmt.annotation)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            return self.result_of(self.expr_value(module, stmt.value, scope))
        return None

    def _absolute(self, module: str, stmt: ast.ImportFrom) -> str:
        if not stmt.level:
            return stmt.module or ""
        is_package = self.src.modules[module].name == "__init__.py"
        parts = module.split(".")[: len(module.split(".")) - stmt.level + (1 if is_package else 0)]
        return ".".join(parts + ([stmt.module] if stmt.module else []))

    def imported(self, module: str, name: str, stmt: ast.Import | ast.ImportFrom) -> Value:
        for alias in stmt.names:
            if isinstance(stmt, ast.Import):
                if alias.asname == name and alias.name in self.src.modules:
                    return Module(alias.name)
                if alias.asname is None and alias.name.split(".")[0] == name and name in self.src.modules:
                    return Module(name)
            elif (alias.asname or alias.name) == name:
                source = self._absolute(module, stmt)
                if f"{source}.{alias.name}" in self.src.modules:
                    return Module(f"{source}.{alias.name}")
                return self.lookup(source, alias.name) if source in self.src.modules else None
        return None

    # -- classes

    def bases(self, cls: Cls) -> list[Cls]:
        node = self.defs[(cls.module, cls.qualname)]
        return [b for b in (self.expr_value(cls.module, e, self.global_value) for e in node.bases) if isinstance(b, Cls)]

    def mro(self, cls: Cls) -> Iterator[Cls]:
        seen: set[Cls] = set()
        todo = [cls]
        while todo:
            c = todo.pop(0)
            if c not in seen:
                seen.add(c)
                yield c
                todo[:0] = self.bases(c)

    def member(self, cls: Cls, attr: str) -> tuple[Cls, ast.AST] | None:
        """The definition of ``attr`` in the class or its benchxfer bases (a method, a nested class, an annotated
        field, or an attribute ``__init__`` assigns)."""
        for c in self.mro(cls):
            node = self.defs.get((c.module, f"{c.qualname}.{attr}"))
            if node is not None:
                return c, node
            body = self.defs[(c.module, c.qualname)].body
            for stmt in body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == attr:
                    return c, stmt
            for init in ("__init__", "__post_init__"):
                fn = self.defs.get((c.module, f"{c.qualname}.{init}"))
                for stmt in ast.walk(fn) if fn is not None else ():
                    target = stmt.target if isinstance(stmt, ast.AnnAssign) else (
                        stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None)
                    if (isinstance(target, ast.Attribute) and target.attr == attr
                            and isinstance(target.value, ast.Name) and target.value.id == "self"):
                        return c, stmt
        return None

    def attribute(self, obj: Value, attr: str) -> Value:
        if isinstance(obj, Module):
            return self.lookup(obj.name, attr)
        if isinstance(obj, (Cls, Instance)):
            cls = obj if isinstance(obj, Cls) else obj.cls
            found = self.member(cls, attr)
            if found is None:
                return None
            owner, node = found
            if isinstance(node, FUNCTION):
                decos = _decorators(node)
                if "property" in decos or "cached_property" in decos:
                    return self.instance_of(owner.module, node.returns) if isinstance(obj, Instance) else None
                implicit = "classmethod" in decos or (isinstance(obj, Instance) and "staticmethod" not in decos)
                return Fn(owner.module, f"{owner.qualname}.{attr}", implicit)
            if isinstance(node, ast.ClassDef):
                return Cls(owner.module, f"{owner.qualname}.{attr}")
            if isinstance(obj, Instance) and isinstance(node, ast.AnnAssign):
                return self.instance_of(owner.module, node.annotation) or self.stored.get((owner, attr))
            if isinstance(obj, Instance) and isinstance(node, ast.Assign):
                return self.result_of(self.expr_value(owner.module, node.value, self.global_value))
        return None

    def fields(self, cls: Cls) -> list[str]:
        """A dataclass's fields in order, its bases' first (the annotated names of the class bodies)."""
        out: list[str] = []
        for c in reversed(list(self.mro(cls))):
            for stmt in self.defs[(c.module, c.qualname)].body:
                if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                        and "ClassVar" not in ast.unparse(stmt.annotation) and stmt.target.id not in out):
                    out.append(stmt.target.id)
        return out

    def store(self, cls: Cls, attr: str, value: Value) -> None:
        found = self.member(cls, attr)
        if found is not None and isinstance(found[1], ast.AnnAssign) and self.callees(value):
            self.stored.setdefault((found[0], attr), value)

    def property_of(self, obj: Value, attr: str) -> Fn | None:
        """The getter that reading ``obj.attr`` calls, when it is a ``@property``."""
        if not isinstance(obj, Instance):
            return None
        found = self.member(obj.cls, attr)
        if found and isinstance(found[1], FUNCTION) and {"property", "cached_property"} & _decorators(found[1]):
            return Fn(found[0].module, f"{found[0].qualname}.{attr}", True)
        return None

    # -- expressions

    def instance_of(self, module: str, annotation: ast.expr | None) -> Value:
        node = _strip_optional(annotation) if annotation is not None else None
        if node is None:
            return None
        value = self.expr_value(module, node, self.global_value)
        return Instance(value) if isinstance(value, Cls) else None

    def result_of(self, value: Value) -> Value:
        """What calling ``value`` gives, as far as it is known: an object of a class, or what an annotated
        function returns."""
        if isinstance(value, Cls):
            return Instance(value)
        if isinstance(value, Fn):
            node = self.defs[(value.module, value.qualname)]
            return self.instance_of(value.module, node.returns)
        return None

    def expr_value(self, module: str, node: ast.expr, scope) -> Value:
        if isinstance(node, ast.Name):
            return scope(module, node.id)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.expr_value(module, node.value, scope), node.attr)
        if isinstance(node, ast.Call):
            return self.result_of(self.expr_value(module, node.func, scope))
        if isinstance(node, ast.NamedExpr):
            return self.expr_value(module, node.value, scope)
        return None

    def callees(self, value: Value) -> list[Fn]:
        """The functions a call of ``value`` enters: a function; a class's ``__init__`` and ``__post_init__``; an
        object's ``__call__``."""
        if isinstance(value, Fn):
            return [value]
        if isinstance(value, Cls):
            out = []
            for name in ("__init__", "__post_init__"):
                found = self.member(value, name)
                if found and isinstance(found[1], FUNCTION):
                    out.append(Fn(found[0].module, f"{found[0].qualname}.{name}", True))
            return out
        if isinstance(value, Instance):
            return [f] if isinstance(f := self.attribute(value, "__call__"), Fn) else []
        return []


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """A module's statements, those inside a top-level ``if``/``try`` included (``if TYPE_CHECKING:`` imports
    type the annotations)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try)):
            for sub in (stmt.body, stmt.orelse, getattr(stmt, "finalbody", []),
                        *[h.body for h in getattr(stmt, "handlers", [])]):
                yield from _top_level(sub)


def _bound_names(stmt: ast.AST) -> list[str]:
    if isinstance(stmt, (*FUNCTION, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, ast.Import):
        return [a.asname or a.name.split(".")[0] for a in stmt.names]
    if isinstance(stmt, ast.ImportFrom):
        return [a.asname or a.name for a in stmt.names]
    if isinstance(stmt, ast.Assign):
        return [n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    return []


def _parameters(fn: ast.AST) -> list[str]:
    """A function's parameter names, in order (``*args`` and ``**kwargs`` last)."""
    a = fn.args
    return [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg)))]


def _body_nodes(fn: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function's own body: nested functions, classes and lambdas are their own scopes."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (*FUNCTION, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


# --- the walk ----------------------------------------------------------------------------------------------

@dataclass
class Stop:
    module: str
    function: str  # qualname in its module
    depth: int
    site: str  # file:line of the call that made the stop ("" for the start)
    caller: str  # module:qualname of the caller ("" for the start)
    end: int = 0  # the index after this stop's last stop below it


@dataclass
class Route:
    stops: list[Stop]
    files: list[str]
    climbs: list[int]  # indexes into stops
    returns_up: list[int]
    reading: tuple[int, int]  # stops[reading[0]:reading[1]]: the sweep file read

    def summary(self) -> dict[str, Any]:
        lo, hi = self.reading

        def line(i: int) -> str:
            s = self.stops[i]
            return f"{s.site}: {s.caller} -> {s.module}:{s.function}"

        return {
            "stops": len(self.stops), "files": len(self.files), "modules": len({s.module for s in self.stops}),
            "climbs": len(self.climbs), "climbs_reading": sum(lo <= i < hi for i in self.climbs),
            "returns_up": len(self.returns_up), "returns_up_reading": sum(lo <= i < hi for i in self.returns_up),
            "reading_stops": hi - lo,
            "climb_list": [line(i) for i in self.climbs],
            "return_up_list": [f"{line(i)} (from {self.stops[i - 1].module})" for i in self.returns_up],
            "route": [f"{s.module}:{s.function}" for s in self.stops],
        }


class Walk:
    """The walk from one function: its stops in order, each function entered once. ``everything``: every value
    counts as derived from the file argument (``--all-calls``); else only what the taint rules derive."""

    def __init__(self, src: Source, layers: tuple[str, ...], everything: bool, floor: str | None = None):
        self.src, self.layers, self.index, self.everything = src, layers, Index(src), everything
        self.floor = None if floor is None else rank(layers, f"{PACKAGE}.{floor}")  # see library()
        self.walked: set[tuple[str, str]] = set()
        self.stops: list[Stop] = []
        self.derived_returns: set[tuple[str, str]] = set()  # functions a ``return`` of which gives a derived value
        self.derived_names: dict[tuple[str, str], set[str]] = {}  # each walked function's derived names (live)

    def library(self, fn: Fn) -> bool:
        """With a floor (``--stages``: ``STAGES_FLOOR``): ``fn`` is in a module ranked at or below it (the shared
        layers), which the walk treats as a library: no stop, not walked, its value derived as a library call's."""
        return self.floor is not None and self._rank(fn.module) <= self.floor

    def enter(self, fn: Fn, depth: int, site: str, caller: str, bindings: dict[str, Value],
              derived: set[str] | None) -> None:
        """Walk ``fn`` unless walked before; ``derived``: its parameters that start derived (None: all of them)."""
        key = (fn.module, fn.qualname)
        if key in self.walked or key not in self.index.defs or self.library(fn):
            return
        self.walked.add(key)
        stop = Stop(fn.module, fn.qualname, depth, site, caller)
        self.stops.append(stop)
        walk = FunctionWalk(self, fn, depth, bindings, derived)
        self.derived_names[key] = walk.derived
        walk.run()
        stop.end = len(self.stops)

    def route(self, start: str, reading: str, file_argument: str = FILE_ARGUMENT) -> Route:
        module, qual = start.split(":")
        node = self.index.defs.get((module, qual))
        if node is not None and not self.everything and file_argument not in _parameters(node):
            raise SystemExit(f"{start}: no parameter {file_argument!r} to follow; name it with --file-argument")
        self.enter(Fn(module, qual), 0, "", "", {}, {file_argument})
        if not self.stops:
            raise SystemExit(f"{start}: no such function")
        files = sorted({str(self.src.where(s.module)) for s in self.stops})
        climbs, returns_up = [], []
        seen: set[str] = set()
        for i, s in enumerate(self.stops):
            before = self.stops[i - 1].module if i else None
            left = s.module in seen and s.module != before  # entered earlier, and the route went elsewhere since
            caller = s.caller.split(":")[0]
            if left and caller != s.module and self._rank(s.module) > self._rank(caller):
                climbs.append(i)
            if left and before is not None and self._rank(s.module) > self._rank(before):
                returns_up.append(i)
            seen.add(s.module)
        r_module, r_qual = reading.split(":")
        at = next((i for i, s in enumerate(self.stops) if (s.module, s.function) == (r_module, r_qual)), None)
        if at is None:  # renamed or moved: never a silent 0
            raise SystemExit(f"{reading}: not on the route from {start}; name the function that reads the sweep "
                             "file with --reading")
        return Route(self.stops, files, climbs, returns_up, (at, self.stops[at].end))

    def _rank(self, module: str) -> int:
        return rank(self.layers, module)


class FunctionWalk:
    """One function's calls, in the order Python evaluates them; each followed callee is walked at once."""

    def __init__(self, walk: Walk, fn: Fn, depth: int, bindings: dict[str, Value], derived: set[str] | None):
        self.walk, self.index, self.fn, self.depth = walk, walk.index, fn, depth
        self.node = self.index.defs[(fn.module, fn.qualname)]
        self.env: dict[str, Value] = {}
        self.outer: list[dict[str, Value]] = []  # the enclosing functions' names, innermost first
        parent = self.index.parents.get((fn.module, fn.qualname))
        if parent is not None:  # a nested function sees its enclosing function's imports, defs and parameters
            around = FunctionWalk(walk, Fn(fn.module, parent), depth, {}, set())
            self.outer = [around.env, *around.outer]
        self.env.update(self.static_env())
        self._bind_parameters(bindings)
        self.derived: set[str] = set(_parameters(self.node) if derived is None else derived)  # names, this walk
        if parent is not None:  # the enclosing function's derived names, where this one does not bind its own
            own = {*self.env, *_parameters(self.node)}
            self.derived |= walk.derived_names.get((fn.module, parent), set()) - own
        self.closures = {  # a nested def -> the names its body reads
            n.name: {x.id for x in ast.walk(n) if isinstance(x, ast.Name) and isinstance(x.ctx, ast.Load)}
            - set(_parameters(n)) for n in _body_nodes(self.node) if isinstance(n, FUNCTION)}

    def static_env(self) -> dict[str, Value]:
        """Names bound anywhere in the body: unknown (a local shadows a global) but imports and nested defs."""
        env: dict[str, Value] = {}
        for node in _body_nodes(self.node):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                env.setdefault(node.id, None)
        for node in _body_nodes(self.node):
            if isinstance(node, (ast.Import, ast.ImportFrom, *FUNCTION, ast.ClassDef)):
                for name in _bound_names(node):
                    env[name] = self.index.bound(self.fn.module, name, node, self.name_value)
        return env

    def _bind_parameters(self, bindings: dict[str, Value]) -> None:
        args = self.node.args
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
        decos = _decorators(self.node)
        owner = self.fn.qualname.rsplit(".", 1)[0] if "." in self.fn.qualname else None
        is_method = owner is not None and isinstance(self.index.defs.get((self.fn.module, owner)), ast.ClassDef)
        for i, p in enumerate(params):
            if i == 0 and is_method and "staticmethod" not in decos:
                cls = Cls(self.fn.module, owner)
                self.env[p.arg] = cls if "classmethod" in decos else Instance(cls)
            else:
                self.env[p.arg] = bindings.get(p.arg) or self.index.instance_of(self.fn.module, p.annotation)
        for extra in (args.vararg, args.kwarg):
            if extra is not None:
                self.env[extra.arg] = None

    def name_value(self, module: str, name: str) -> Value:
        if name in self.env:
            return self.env[name]
        for outer in self.outer:
            if name in outer:
                return outer[name]
        return self.index.lookup(module, name)

    def value(self, node: ast.expr) -> Value:
        return self.index.expr_value(self.fn.module, node, self.name_value)

    def is_derived(self, node: ast.AST | None) -> bool:
        """Whether an expression's value is derived from the file argument: it mentions a derived name (an
        attribute or item of a derived object is derived), except that a call of a benchxfer function gives what
        its ``return`` gives (derived when one of them was, in the walk of it so far); a constructor's object is
        derived when an argument is."""
        if node is None:
            return False
        if self.walk.everything:
            return True
        if isinstance(node, ast.Name):  # a nested def reading a derived name is a derived callable
            return node.id in self.derived or bool(self.closures.get(node.id, set()) & self.derived)
        if isinstance(node, ast.Call):
            callee = self.value(node.func)
            fns = [f for f in self.index.callees(callee) if not self.walk.library(f)]
            if fns and not isinstance(callee, Cls):
                return any((f.module, f.qualname) in self.walk.derived_returns for f in fns)
        return any(self.is_derived(child) for child in ast.iter_child_nodes(node))

    def run(self) -> None:
        for stmt in self.node.body:
            self.visit(stmt)

    # -- visiting in evaluation order

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, (*FUNCTION, ast.ClassDef)):
            for d in node.decorator_list:
                self.visit(d)
            if isinstance(node, FUNCTION):
                for default in (*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]):
                    self.visit(default)
            return  # its body runs when it is called
        if isinstance(node, ast.Assign):
            self.visit(node.value)
            value, derived = self.value(node.value), self.is_derived(node.value)
            for target in node.targets:
                self.visit(target)
                self._assign(target, value, derived)
            return
        if isinstance(node, ast.AnnAssign):
            if node.value is not None:
                self.visit(node.value)
            self.visit(node.target)
            if isinstance(node.target, ast.Name):
                self.env[node.target.id] = (self.index.instance_of(self.fn.module, node.annotation)
                                            or (self.value(node.value) if node.value is not None else None))
            self._derive(node.target, self.is_derived(node.value))
            return
        if isinstance(node, ast.AugAssign):
            self.visit(node.target)
            self.visit(node.value)
            self._derive(node.target, self.is_derived(node.value))
            return
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)):
            if node.value is not None:
                self.visit(node.value)
            if self.is_derived(node.value):
                self.walk.derived_returns.add((self.fn.module, self.fn.qualname))
            return
        if isinstance(node, (ast.For, ast.AsyncFor)):
            self.visit(node.iter)
            self._assign(node.target, None, self.is_derived(node.iter))
            for stmt in (*node.body, *node.orelse):
                self.visit(stmt)
            return
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.visit(item.context_expr)
                if item.optional_vars is not None:
                    self._assign(item.optional_vars, None, self.is_derived(item.context_expr))
            for stmt in node.body:
                self.visit(stmt)
            return
        if isinstance(node, ast.NamedExpr):
            self.visit(node.value)
            self._assign(node.target, self.value(node.value), self.is_derived(node.value))
            return
        if isinstance(node, COMPREHENSION):  # each ``for`` (its iterable, its target, its ``if``s), then the element
            for gen in node.generators:
                self.visit(gen.iter)
                self._assign(gen.target, None, self.is_derived(gen.iter))
                for cond in gen.ifs:
                    self.visit(cond)
            for part in (node.key, node.value) if isinstance(node, ast.DictComp) else (node.elt,):
                self.visit(part)
            return
        if isinstance(node, ast.Call):
            self.visit(node.func.value if isinstance(node.func, ast.Attribute) else node.func)
            for arg in (*node.args, *[k.value for k in node.keywords]):
                self.visit(arg)
            self.call(node)
            return
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            self.visit(node.value)
            getter = self.index.property_of(self.value(node.value), node.attr)
            if getter is not None and self.is_derived(node.value):
                self.enter(getter, node, {}, set(_parameters(self.index.defs[(getter.module, getter.qualname)])[:1]))
            return
        for child in ast.iter_child_nodes(node):
            self.visit(child)

    def _assign(self, target: ast.AST, value: Value, derived: bool) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List, ast.Starred)):
            for n in ast.walk(target):
                if isinstance(n, ast.Name):
                    self.env[n.id] = None
        self._derive(target, derived)

    def _derive(self, target: ast.AST, derived: bool) -> None:
        """A target given a derived value becomes derived: a name, each name of a tuple, and the object whose
        attribute or item is set (``x.a = v``, ``x[k] = v``: ``x``). Once derived, a name stays derived."""
        if not derived:
            return
        while isinstance(target, (ast.Attribute, ast.Subscript, ast.Starred)):
            target = target.value
        for n in ast.walk(target):
            if isinstance(n, ast.Name):
                self.derived.add(n.id)

    # -- calls

    def call(self, node: ast.Call) -> None:
        callee = self.value(node.func)
        fns = self.index.callees(callee)
        if fns and all(self.walk.library(f) for f in fns):
            callee, fns = None, []  # --stages: a call into the shared layers is a library call
        handed = [a.value if isinstance(a, ast.Starred) else a for a in (*node.args, *[k.value for k in node.keywords])]
        if isinstance(callee, Cls):
            self._store_fields(callee, node)
        if not (self.is_derived(node.func) or any(self.is_derived(a) for a in handed)):
            return  # passes nothing derived from the file argument: not followed
        if callee is None:  # a call outside benchxfer: what it is handed that can be called is taken to be called there
            for arg in handed:
                for fn in self._callables(arg):
                    self.enter(fn, node, {}, None)
            return
        for fn in fns:
            already = (fn.module, fn.qualname) in self.walk.walked
            self.enter(fn, node, self._bindings(fn, node) if fn is fns[0] else {}, self._derived_parameters(fn, node))
            if already:  # walked before, without these callbacks: they are taken to be called where they are passed
                for arg in handed:
                    for cb in self._callables(arg):
                        self.enter(cb, node, {}, None)

    def _store_fields(self, cls: Cls, node: ast.Call) -> None:
        """A callable given to a field of an object made here (``Shared(index, launch, env, finish)``, ``Runtime(
        finish=shared.finish)``): a later call of that field on any object of the class is a call of it."""
        given = [(kw.arg, kw.value) for kw in node.keywords if kw.arg is not None]
        if self.index.member(cls, "__init__") is None:  # a dataclass's own __init__: the fields, in order
            given += [(f, a) for f, a in zip(self.index.fields(cls), node.args) if not isinstance(a, ast.Starred)]
        for name, arg in given:
            self.index.store(cls, name, self.value(arg))

    def _callables(self, node: ast.expr) -> list[Fn]:
        """The benchxfer functions an expression may be: a function or method, an object's ``__call__`` (each side
        of ``a or b`` and ``a if c else b``); not a class."""
        if isinstance(node, ast.BoolOp):
            return [fn for v in node.values for fn in self._callables(v)]
        if isinstance(node, ast.IfExp):
            return self._callables(node.body) + self._callables(node.orelse)
        value = self.value(node)
        return [] if isinstance(value, Cls) else self.index.callees(value)

    def _derived_parameters(self, fn: Fn, node: ast.Call) -> set[str]:
        """The parameters of ``fn`` that this call binds to derived values: by position and keyword (a derived
        ``*xs`` every positional one it may reach, a derived ``**kw`` every one; one past the named ones
        ``*args`` / ``**kwargs``), and ``self``/``cls`` when the object called on is derived."""
        args = self.index.defs[(fn.module, fn.qualname)].args
        positional = [p.arg for p in (*args.posonlyargs, *args.args)]
        given = positional[1 if fn.implicit_first else 0:]
        out = {positional[0]} if (fn.implicit_first and positional and isinstance(node.func, ast.Attribute)
                                  and self.is_derived(node.func.value)) else set()
        for i, arg in enumerate(node.args):
            if isinstance(arg, ast.Starred):
                if self.is_derived(arg.value):
                    out |= set(given[i:]) | ({args.vararg.arg} if args.vararg else set())
                break
            if self.is_derived(arg):
                out |= {given[i]} if i < len(given) else ({args.vararg.arg} if args.vararg else set())
        named = {p.arg for p in (*args.args, *args.kwonlyargs)}
        for kw in node.keywords:
            if self.is_derived(kw.value):
                out |= (named if kw.arg is None else {kw.arg} if kw.arg in named
                        else {args.kwarg.arg} if args.kwarg else set())
        return out

    def _bindings(self, fn: Fn, node: ast.Call) -> dict[str, Value]:
        target = self.index.defs[(fn.module, fn.qualname)]
        args = target.args
        positional = [p.arg for p in (*args.posonlyargs, *args.args)][1 if fn.implicit_first else 0:]
        out: dict[str, Value] = {}
        for name, arg in zip(positional, node.args):
            if isinstance(arg, ast.Starred):
                break
            out[name] = self.value(arg)
        for kw in node.keywords:
            if kw.arg is not None:
                out[kw.arg] = self.value(kw.value)
        return {k: v for k, v in out.items() if v is not None}

    def enter(self, fn: Fn, node: ast.AST, bindings: dict[str, Value], derived: set[str] | None) -> None:
        site = f"{self.walk.src.where(self.fn.module)}:{node.lineno}"
        self.walk.enter(fn, self.depth + 1, site, f"{self.fn.module}:{self.fn.qualname}", bindings, derived)


MODES = {"follow-file": False, "all-calls": True}  # mode -> every value taken as derived from the file argument
# --stages: the highest of the shared layers (ARCHITECTURE.md's layers block); the modules above it are the
# stages' own (plan/, launch/, report/, the commands), the route issue 32 measured (23 files)
STAGES_FLOOR = "train"


def route(src: Source, layers: tuple[str, ...], start: str = START, reading: str = READING,
          mode: str = "follow-file", file_argument: str = FILE_ARGUMENT, floor: str | None = None) -> Route:
    """``floor``: a module of the layers block (``STAGES_FLOOR`` with ``--stages``); it and every module ranked
    below it are a library to the walk."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    return Walk(src, layers, MODES[mode], floor).route(start, reading, file_argument)


def _short(module: str) -> str:
    return module.removeprefix(f"{PACKAGE}.")


def report(r: Route, returns_up: bool = True) -> str:
    s = r.summary()
    lines = [
        f"stops {s['stops']} in {s['files']} files ({s['modules']} modules); sweep file read: {s['reading_stops']} stops",
        f"climbs {s['climbs']} (while the sweep file is read: {s['climbs_reading']})",
        f"returns up {s['returns_up']} (while the sweep file is read: {s['returns_up_reading']})",
        "", "climbs (a call from a lower module into a higher one the route had left):",
        *[f"  {c}" for c in s["climb_list"]],
    ]
    if returns_up:
        lines += ["", "returns up (the route back up to a higher module it had left; from: the stop before):",
                  *[f"  {c}" for c in s["return_up_list"]]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", type=Path, default=ROOT / PACKAGE, help="the package folder (default: this tree's)")
    ap.add_argument("--architecture", type=Path, default=None,
                    help="the file with the ```layers block (default: ARCHITECTURE.md beside the package)")
    ap.add_argument("--start", default=START, help=f"module:function to start at (default {START})")
    ap.add_argument("--reading", default=READING, help=f"module:function that reads the sweep file (default {READING})")
    ap.add_argument("--file-argument", default=FILE_ARGUMENT,
                    help=f"the start's parameter that holds the sweep file (default {FILE_ARGUMENT!r})")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--follow-file", dest="mode", action="store_const", const="follow-file", default="follow-file",
                      help="follow only the calls passed a value derived from the file argument (the default)")
    mode.add_argument("--all-calls", dest="mode", action="store_const", const="all-calls",
                      help="follow every call the walk resolves")
    ap.add_argument("--stages", action="store_true",
                    help=f"walk only the stages' own modules (above {STAGES_FLOOR} in the layers block): a call into "
                         "the shared layers is a library call, no stop")
    ap.add_argument("--json", action="store_true", help="print the numbers and lists as JSON (records nothing)")
    ap.add_argument("--route", action="store_true", help="print every stop, indented by depth")
    ap.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    a = ap.parse_args()
    architecture = a.architecture or a.package.resolve().parent / "ARCHITECTURE.md"
    src, layers = Source.scan(a.package.resolve()), read_layers(architecture.read_text())
    floor = STAGES_FLOOR if a.stages else None
    routes = {m: route(src, layers, a.start, a.reading, m, a.file_argument, floor)
              for m in (MODES if not (a.json or a.no_record) else [a.mode])}  # a record holds both modes
    r = routes[a.mode]
    if a.json:
        print(json.dumps(r.summary(), indent=1))
        return
    if a.route:
        for s in r.stops:
            print(f"{'  ' * s.depth}{_short(s.module)}:{s.function}  [{s.site}]")
        print()
    print(f"--{a.mode}:\n{report(r)}")
    if not a.no_record:
        from _record import git_commit, record  # beside this script (its folder is sys.path[0])

        body = "\n\n".join(f"`--{m}`:\n\n```\n{report(routes[m], returns_up=False)}\n```" for m in MODES)
        if floor is None:  # and the stages' own modules, the route as issue 32 counted it (its returns listed)
            stages = route(src, layers, a.start, a.reading, "follow-file", a.file_argument, STAGES_FLOOR)
            body += f"\n\n`--follow-file --stages`:\n\n```\n{report(stages)}\n```"
        record("route", "The route of a sweep file through the code (issue 32)", "python benchmarks/route.py",
               f"At commit {git_commit()} (static: the load does not matter; `--no-record` lists the returns up, "
               f"`--route` every stop; `--follow-file`, the default, follows the file argument; `--stages` walks only "
               f"the modules above `{STAGES_FLOOR}` in the layers block, as issue 32's 23-file route did):\n\n{body}\n")


if __name__ == "__main__":
    main()

"""``benchmarks/route.py`` (issue 32's measure) on a small package written here, whose route is counted by hand."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parents[1]


def _route_script(monkeypatch):
    """benchmarks/route.py as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("benchmarks_route", REPO / "benchmarks" / "route.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


PROBE = {  # layers, lowest first: low mid high cmd
    "__init__.py": "",
    "low.py": ("def util():\n    return 1\n\n\n"
               "def run(hook):\n    util()\n    hook()\n"),  # line 7: a callback into high, which ranks higher
    "mid.py": ("from dataclasses import dataclass\nfrom typing import Callable\n\nfrom benchxfer import low\n\n\n"
               "class Box:\n    def __init__(self, n):\n        self.n = n\n\n"
               "    def get(self):\n        return low.util()\n\n"
               "    @property\n    def size(self):\n        return 1\n\n\n"
               "@dataclass\nclass Job:\n    name: str\n    then: Callable | None = None\n\n\n"
               "def finish(job: Job):\n    job.then()\n"),  # line 26: the callable Job was given, from high
    "high.py": ("from benchxfer.mid import Box\n\n\n"
                "def read(path):\n    box = Box(path)\n    box.get()\n    check(path)\n    return box.size\n\n\n"
                "def check(path):\n    return sorted([path], key=_key)\n\n\n"
                "def _key(p):\n    return p\n\n\n"
                "def done():\n    pass\n\n\n"
                "def done2():\n    pass\n\n\n"
                "def done3():\n    pass\n"),
    "cmd.py": ("from benchxfer import high, low\nfrom benchxfer.mid import Job, finish\n\n\n"
               "def sweep(file):\n    high.read(file)\n    low.run(high.done)\n    low.run(high.done3)\n"
               "    finish(Job('x', high.done2))\n"),
}


def _write(root: Path, package: dict[str, str]) -> Path:
    for rel, text in package.items():
        (root / "benchxfer" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "benchxfer" / rel).write_text(text)
    (root / "ARCHITECTURE.md").write_text("```layers\nlow mid high  # a comment\ncmd\n```\n")
    return root / "benchxfer"


def test_route_of_a_small_package(tmp_path, monkeypatch, capsys):
    """``--all-calls``, the walk, stop by stop: ``Box(path)`` enters ``__init__``, ``box.get()`` a method of a local made by a
    constructor, ``box.size`` a property, ``sorted(key=_key)`` a function handed to a library; ``low.run(high.done)``
    binds the callback that ``run`` calls, and a second ``low.run(high.done3)`` (``run`` walked already) is taken to
    call its callback there; ``Job('x', high.done2)`` stores a callable that ``finish`` calls through the
    field; ``util()`` in ``run`` was walked already (no stop). Climbs: the two callbacks (low -> high, mid -> high).
    Returns up: to high after low (``check``), after low (``done``) and after mid (``done2``)."""
    monkeypatch.setattr(sys, "argv", ["route.py", "--package", str(_write(tmp_path, PROBE)), "--start",
                                      "benchxfer.cmd:sweep", "--reading", "benchxfer.high:read", "--all-calls",
                                      "--json"])
    script = _route_script(monkeypatch)
    script.main()
    r = json.loads(capsys.readouterr().out)
    assert [s.removeprefix("benchxfer.") for s in r["route"]] == [
        "cmd:sweep", "high:read", "mid:Box.__init__", "mid:Box.get", "low:util", "high:check", "high:_key",
        "mid:Box.size", "low:run", "high:done", "high:done3", "mid:finish", "high:done2"]
    assert (r["stops"], r["files"], r["reading_stops"]) == (13, 4, 7)
    assert (r["climbs"], r["climbs_reading"], r["returns_up"], r["returns_up_reading"]) == (2, 0, 3, 1)
    assert r["climb_list"] == ["benchxfer/low.py:7: benchxfer.low:run -> benchxfer.high:done",
                               "benchxfer/mid.py:26: benchxfer.mid:finish -> benchxfer.high:done2"]
    assert r["return_up_list"][0] == ("benchxfer/high.py:7: benchxfer.high:read -> benchxfer.high:check "
                                      "(from benchxfer.low)")
    src, layers = script.Source.scan(tmp_path / "benchxfer"), script.read_layers("```layers\nlow mid high cmd\n```\n")
    with pytest.raises(SystemExit, match="benchxfer.high:gone: not on the route"):  # renamed: never a silent 0
        script.route(src, layers, "benchxfer.cmd:sweep", "benchxfer.high:gone")


TAINT = {  # layers, lowest first: low mid high cmd; the sweep file is cmd.sweep's ``file``
    "__init__.py": "",
    "low.py": ("def log(msg):\n    pass\n\n\n"
               "def show(x):\n    pass\n\n\n"
               "def count(xs):\n    return len(xs)\n\n\n"
               "def apply(xs, fn):\n    fn(xs)\n\n\n"  # line 14: a callback into high, given a derived value
               "def note(kind, x):\n    pass\n"),
    "mid.py": ("class Spec:\n    def __init__(self, path):\n        self.path = path\n\n"
               "    def describe(self):\n        self._name()\n        return tidy()\n\n"
               "    def _name(self):\n        return self.path\n\n\n"
               "def tidy():\n    return 1\n\n\n"
               "def check(d):\n    pass\n"),
    "high.py": ("from benchxfer.mid import Spec\n\n\n"
                "def load(path) -> Spec:\n    text = read(path)\n    spec = Spec(text)\n    validate(text)\n"
                "    return spec\n\n\n"
                "def read(path):\n    with open(path) as f:\n        return f.read()\n\n\n"
                "def validate(text):\n    pass\n\n\n"
                "def label(path):\n    read(path)\n    return 'sweep'\n\n\n"
                "def fix(s):\n    pass\n"),
    "cmd.py": ("from benchxfer import high, low, mid\n\n\n"
               "def sweep(file, verbose):\n    spec = high.load(file)\n    low.log(verbose)\n"
               "    name = high.label(file)\n    low.show(name)\n    low.count(spec.path)\n"
               "    for d in [spec]:\n        mid.check(d)\n    spec.describe()\n    low.apply(spec, high.fix)\n\n"
               "    def tag(kind):\n        return low.note(kind, spec)\n\n    tag('x')\n"),
}


def test_follow_file_walks_what_the_file_argument_reaches(tmp_path, monkeypatch, capsys):
    """``--follow-file`` (the default), stop by stop: ``high.load(file)`` is followed; in it ``with open(path) as
    f`` derives ``f``, so ``read`` returns a derived value and ``text`` is derived, ``Spec(text)`` and
    ``validate(text)`` are followed, and ``load`` returns a derived ``spec``: the assignee ``spec`` in ``sweep`` is
    derived by that return. ``low.log(verbose)`` passes nothing derived: not followed. ``high.label(file)`` is
    followed but returns a constant, so ``name`` is not derived and ``low.show(name)`` is not followed.
    ``low.count(spec.path)``: an attribute of a derived object. ``for d in [spec]`` derives ``d``
    (``mid.check(d)``); ``spec.describe()`` is followed for its derived receiver, where ``self`` starts derived
    (``self._name()`` followed, ``tidy()`` not). ``low.apply(spec, high.fix)`` binds the callback, which ``apply``
    calls with the derived ``xs``: a climb from low into high. ``tag('x')`` passes a constant, but ``tag`` is a
    nested def that reads the derived ``spec``: followed, and in it ``spec`` is derived (``low.note``). Returns up:
    ``validate`` (high after mid, while reading), ``check`` (mid after low), ``fix`` (high after low), ``tag``
    (cmd after high)."""
    package = _write(tmp_path, TAINT)
    monkeypatch.setattr(sys, "argv", ["route.py", "--package", str(package), "--start", "benchxfer.cmd:sweep",
                                      "--reading", "benchxfer.high:load", "--json"])
    script = _route_script(monkeypatch)
    script.main()
    r = json.loads(capsys.readouterr().out)
    assert [s.removeprefix("benchxfer.") for s in r["route"]] == [
        "cmd:sweep", "high:load", "high:read", "mid:Spec.__init__", "high:validate", "high:label", "low:count",
        "mid:check", "mid:Spec.describe", "mid:Spec._name", "low:apply", "high:fix", "cmd:sweep.tag", "low:note"]
    assert (r["stops"], r["files"], r["reading_stops"]) == (14, 4, 4)
    assert (r["climbs"], r["climbs_reading"], r["returns_up"], r["returns_up_reading"]) == (1, 0, 4, 1)
    assert r["climb_list"] == ["benchxfer/low.py:14: benchxfer.low:apply -> benchxfer.high:fix"]
    assert [line.split(": ", 1)[1] for line in r["return_up_list"]] == [
        "benchxfer.high:load -> benchxfer.high:validate (from benchxfer.mid)",
        "benchxfer.cmd:sweep -> benchxfer.mid:check (from benchxfer.low)",
        "benchxfer.low:apply -> benchxfer.high:fix (from benchxfer.low)",
        "benchxfer.cmd:sweep -> benchxfer.cmd:sweep.tag (from benchxfer.high)"]
    src, layers = script.Source.scan(package), script.read_layers("```layers\nlow mid high cmd\n```\n")
    every = script.route(src, layers, "benchxfer.cmd:sweep", "benchxfer.high:load", "all-calls").summary()["route"]
    assert sorted(set(every) - set(r["route"])) == ["benchxfer.low:log", "benchxfer.low:show", "benchxfer.mid:tidy"]
    with pytest.raises(SystemExit, match="no parameter 'path' to follow"):  # a renamed argument: never a silent 0
        script.route(src, layers, "benchxfer.cmd:sweep", "benchxfer.high:load", file_argument="path")


def test_stages_treat_the_shared_layers_as_a_library(tmp_path, monkeypatch):
    """With a floor (``--stages``: ``train``), a module ranked at or below it is a library: ``low.util`` is no stop,
    and ``low.run(high.done)`` is a library call that is taken to call the function it is handed, from ``cmd``
    (so no climb from ``low``). What is left: the climb from ``mid.finish`` into ``high.done2``, and the returns up to
    ``high`` after ``mid`` (``check``, ``done``, ``done2``)."""
    script = _route_script(monkeypatch)
    src = script.Source.scan(_write(tmp_path, PROBE))
    layers = script.read_layers("```layers\nlow mid high cmd\n```\n")
    r = script.route(src, layers, "benchxfer.cmd:sweep", "benchxfer.high:read", "all-calls", floor="low").summary()
    assert [s.removeprefix("benchxfer.") for s in r["route"]] == [
        "cmd:sweep", "high:read", "mid:Box.__init__", "mid:Box.get", "high:check", "high:_key", "mid:Box.size",
        "high:done", "high:done3", "mid:finish", "high:done2"]
    assert (r["climbs"], r["returns_up"], r["returns_up_reading"]) == (1, 3, 1)
    assert r["climb_list"] == ["benchxfer/mid.py:26: benchxfer.mid:finish -> benchxfer.high:done2"]
    assert f"benchxfer.{script.STAGES_FLOOR}" in script.read_layers((REPO / "ARCHITECTURE.md").read_text())

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


def test_route_of_a_small_package(tmp_path, monkeypatch, capsys):
    """The walk, stop by stop: ``Box(path)`` enters ``__init__``, ``box.get()`` a method of a local made by a
    constructor, ``box.size`` a property, ``sorted(key=_key)`` a function handed to a library; ``low.run(high.done)``
    binds the callback that ``run`` calls, and a second ``low.run(high.done3)`` (``run`` walked already) is taken to
    call its callback there; ``Job('x', high.done2)`` stores a callable that ``finish`` calls through the
    field; ``util()`` in ``run`` was walked already (no stop). Climbs: the two callbacks (low -> high, mid -> high).
    Returns up: to high after low (``check``), after low (``done``) and after mid (``done2``)."""
    for rel, text in PROBE.items():
        (tmp_path / "benchxfer" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "benchxfer" / rel).write_text(text)
    (tmp_path / "ARCHITECTURE.md").write_text("```layers\nlow mid high  # a comment\ncmd\n```\n")
    monkeypatch.setattr(sys, "argv", ["route.py", "--package", str(tmp_path / "benchxfer"), "--start",
                                      "benchxfer.cmd:sweep", "--reading", "benchxfer.high:read", "--json"])
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

"""Property: no malformed sweep file gets past the dry run, and none ends in a traceback or a hang.

From the valid sweep of ``test_errors.py`` every key (at every depth) is dropped, retyped and corrupted, and the
file itself is cut short and has bytes flipped (seeds fixed). Each variant runs ``benchxfer sweep FILE --dry-run``
through click's test runner. Every run must end within seconds with at most one line on stderr and no traceback;
the variants that cannot be valid (a retyped or corrupted value anywhere, a required key dropped) must exit
non-zero with that one line.
"""

from __future__ import annotations

import copy
import random
import time

import pytest
import yaml
from test_errors import GOOD, warm_run

pytestmark = pytest.mark.fast

SECONDS = 5
REQUIRED = {("inits",), ("datasets",), ("datasets", 0, "name"), ("datasets", 0, "root")}
FREE_TEXT = {("description",)}  # any value is text there
# values no key of the schema accepts (except free text)
WRONG = [{"bogus": 1}, [[]], -7]


def key_paths(node, prefix=()):
    """Every (path) to a key or list item of the document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from key_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from key_paths(v, (*prefix, i))


def _parent(doc, path):
    for part in path[:-1]:
        doc = doc[part]
    return doc


def variants():
    """(label, text, must_fail) for every mutation of the valid sweep."""
    base = yaml.safe_load(GOOD)
    base["description"] = "a valid sweep"
    rng = random.Random(18)
    for path in list(key_paths(base)):
        label = ".".join(map(str, path))
        doc = copy.deepcopy(base)
        del _parent(doc, path)[path[-1]]
        yield f"drop {label}", yaml.safe_dump(doc), path in REQUIRED
        for value in [*WRONG, "".join(rng.choice("abcXYZ!?#% ") for _ in range(rng.randint(1, 12))) + "~"]:
            doc = copy.deepcopy(base)
            _parent(doc, path)[path[-1]] = value
            yield f"set {label}={value!r}", yaml.safe_dump(doc), path not in FREE_TEXT
    text = yaml.safe_dump(base)
    for cut in sorted(rng.sample(range(1, len(text)), 25)):
        yield f"cut at {cut}", text[:cut], False
    for i in range(25):
        raw = bytearray(text.encode())
        for _ in range(3):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        yield f"flip {i}", bytes(raw), False


def test_every_malformed_sweep_is_one_line(tmp_path):
    home = tmp_path / "home"
    failures, refused = [], 0
    cases = list(variants())
    assert len(cases) > 150
    for n, (label, text, must_fail) in enumerate(cases):
        path = tmp_path / f"v{n}.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        started = time.monotonic()
        code, out, err = warm_run(["sweep", str(path), "--dry-run"], {"BENCHXFER_HOME": str(home)}, tmp_path)
        took = time.monotonic() - started
        lines = err.strip().splitlines()
        refused += code != 0
        if took > SECONDS or "Traceback" in err or len(lines) > 1 or (code != 0) != bool(lines) \
                or (must_fail and code == 0) or (lines and not lines[0].startswith("Error: ")):
            failures.append(f"{label}: exit {code} in {took:.1f} s: {err.strip()[:300]!r}")
    assert not failures, "\n".join(failures)
    assert refused > len(cases) * 0.6  # most variants are bad ones: the dry run is not just passing them

"""Property: no malformed sweep file gets past the dry run, and none ends in a traceback or a hang.

From the valid sweep of ``test_errors.py`` every key (at every depth) is dropped, retyped and corrupted, and the
file itself is cut short and has bytes flipped (seeds fixed). Each variant runs ``benchxfer sweep FILE --dry-run``
through click's test runner. Every run must end within seconds with at most one line on stderr and no traceback;
the variants that cannot be valid (a retyped or corrupted value anywhere, a required key dropped) must exit
non-zero with that one line; a dataset root that is any other text is a path not on this machine, which the dry
run lists as absent (the real run refuses it).

The second test draws invalid values for every rule of ``benchxfer/plan/schema.py`` (knobs, reader options, resources,
failure, synthetic keys, seeds, names) from the rule itself, so a new knob is covered without editing it.
"""

from __future__ import annotations

import copy
import random
import time

import pytest
import yaml
from test_errors import GOOD, warm_run

pytestmark = pytest.mark.fast

SECONDS = 30  # a dry run that takes longer has hung (a guard, not a speed goal: the fast tier runs on idle cores)
REQUIRED = {("inits",), ("datasets",), ("datasets", 0, "name"), ("datasets", 0, "root")}
FREE_TEXT = {("description",)}  # any value is text there
PATH_LIKE = {("datasets", 0, "root")}  # any text is a path: one not on this machine is flagged by the dry run, not refused
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
            absent_ok = path in PATH_LIKE and isinstance(value, str)
            yield f"set {label}={value!r}", yaml.safe_dump(doc), path not in FREE_TEXT and not absent_ok
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
                or (must_fail and code == 0) or (lines and not lines[0].startswith("Error: ")) \
                or (label.startswith("set datasets.0.root=") and code == 0 and "\n  absent: " not in out):
            failures.append(f"{label}: exit {code} in {took:.1f} s: {err.strip()[:300]!r}")
    assert not failures, "\n".join(failures)
    assert refused > len(cases) * 0.6  # most variants are bad ones: the dry run is not just passing them


# --- every rule of the schema, drawn invalid from the schema itself ---------------------------------------------

def invalid_values(rule) -> list:
    """Values that ``rule`` refuses, made from the rule (a new knob, option or resource is covered as it is added)."""
    from benchxfer.plan.schema import Name, OneOf, Range

    out: list = ["not-a-value~", [1], {"k": 1}]
    if isinstance(rule, Range):
        if rule.low is not None:
            out.append(rule.low if rule.open_low else rule.low - 1)
        if rule.high is not None:
            out.append(rule.high if rule.open_high else rule.high + 1)
        if rule.integer:
            low = rule.low if rule.low is not None else 0
            out.append(low + 1.5)
        out += [True, float("nan")]
    elif isinstance(rule, OneOf):
        out += [12345 if all(not isinstance(v, int) for v in rule.allowed()) else "banana"]
    elif isinstance(rule, Name):
        out += ["", "Upper Case", "a" * (rule.limit() + 1)]
    values = [v for v in out if not rule.ok(v)]
    assert len(values) >= 3, rule
    return values


def _dataset_taking(option: str) -> str:
    """A dataset whose reader takes ``option`` (the options are the dataset's own list)."""
    from benchxfer.data import DATASETS, get_dataset
    from benchxfer.data.indexing import allowed_options

    return next(n for n in DATASETS.names() if option in allowed_options(get_dataset(n))
                and get_dataset(n).task != "segmentation")


def schema_variants():
    """(label, key, sweep document) for every invalid value of every rule of the schema."""
    from benchxfer.plan.schema import (
        FAILURE_RULES,
        KNOB_RULES,
        OPTION_RULES,
        RESOURCE_RULES,
        SEED,
        SYNTHETIC_RULES,
        Name,
    )
    from benchxfer.recipes.config import KNOBS

    base = yaml.safe_load(GOOD)
    for key, default in KNOBS.items():  # the knobs without a range: their type, and the registry names they take
        if key in KNOB_RULES:
            continue
        for value in [[1], {"k": 1}, "banana~" if isinstance(default, str) else "x"]:
            doc = copy.deepcopy(base)
            doc["overrides"][key] = value
            yield f"overrides.{key}={value!r}", key, doc
    for block, rules in (("overrides", KNOB_RULES), ("resources", RESOURCE_RULES), ("failure", FAILURE_RULES)):
        for key, rule in rules.items():
            for value in invalid_values(rule):
                doc = copy.deepcopy(base)
                doc.setdefault(block, {})[key] = value
                yield f"{block}.{key}={value!r}", key, doc
    for key, rule in OPTION_RULES.items():
        for value in invalid_values(rule):
            doc = copy.deepcopy(base)
            doc["datasets"][0] = {"name": _dataset_taking(key), "root": "synthetic", "options": {key: value}}
            yield f"options.{key}={value!r}", key, doc
    for key, rule in SYNTHETIC_RULES.items():
        for value in invalid_values(rule):
            doc = copy.deepcopy(base)
            doc["datasets"][0]["synthetic"][key] = value
            yield f"synthetic.{key}={value!r}", key, doc
    for value in invalid_values(SEED):
        doc = copy.deepcopy(base)
        doc["seeds"] = [value]
        yield f"seeds=[{value!r}]", "seeds", doc
    for value in invalid_values(Name()):
        doc = copy.deepcopy(base)
        doc["name"] = value
        yield f"name={value!r}", "name", doc


def test_every_rule_of_the_schema_refuses_an_invalid_value(tmp_path):
    """Every knob (recipes/config.py), and every reader option, resource, failure setting, synthetic key, seed and
    name with a rule in ``benchxfer/plan/schema.py``: each invalid value drawn from its rule (a knob without one: a
    wrong type, a name no registry holds) ends the dry run in one line naming the key."""
    from benchxfer.plan.schema import OPTION_RULES, RESOURCE_RULES

    home = tmp_path / "home"
    failures, seen = [], set()
    cases = list(schema_variants())
    for n, (label, key, doc) in enumerate(cases):
        seen.add(key)
        path = tmp_path / f"r{n}.yaml"
        path.write_text(yaml.safe_dump(doc))
        code, out, err = warm_run(["sweep", str(path), "--dry-run"], {"BENCHXFER_HOME": str(home)}, tmp_path)
        lines = err.strip().splitlines()
        if code == 0 or len(lines) != 1 or not lines[0].startswith("Error: ") or "Traceback" in err \
                or key not in lines[0] or "failed unexpectedly" in lines[0]:
            failures.append(f"{label}: exit {code}: {err.strip()[:300]!r}")
    assert not failures, "\n".join(failures)
    from benchxfer.recipes.config import KNOBS

    assert set(KNOBS) | set(OPTION_RULES) | set(RESOURCE_RULES) <= seen
    assert len(cases) > 150

"""A sweep's name holds one sweep. ``sweep FILE`` under a name already used continues that sweep only when FILE
still computes what it did (:func:`refuse_other_sweep`; the dry run says so too); ``resume NAME`` refuses a source
file whose trials changed since (:func:`refuse_changed_trials`). Both compare what the schema read, so that writing
a default out, or one value as a list of one, changes nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from benchxfer.errors import BenchxferError
from benchxfer.plan.spec import load_spec
from benchxfer.trialdir import SweepDir

if TYPE_CHECKING:
    from benchxfer.plan.planning import Plan
    from benchxfer.plan.schema import SweepSpec


# what a sweep file may change under a name already used: how the sweep runs, not what its trials compute
RUN_ONLY_FIELDS = ("path", "description", "resources", "failure", "keep")


def refuse_other_sweep(spec: SweepSpec, file: str) -> None:
    """``sweep FILE`` under a name that already holds a sweep continues that sweep only when FILE still says what
    it said (but how it runs: RUN_ONLY_FIELDS); a file that changed what decides a result (a knob, an lr, a seed, a
    dataset's root or options, an init) would mix two protocols under one name: refused, naming what changed. The
    two are compared as the schema reads them (``spec`` and the sweep's copy, its relative roots found from where
    the sweep was started), so that writing a default out, or one value as a list of one, changes nothing."""
    sdir = SweepDir(spec.name)
    if not sdir.exists() or Path(file).resolve() == sdir.spec_copy.resolve():
        return
    before_base = Path(readable_source(sdir) or sdir.spec_copy).parent
    before, after = result_fields(load_spec(sdir.spec_copy, before_base)), result_fields(spec)
    changed = [k for k in sorted(set(before) | set(after)) if before.get(k, "(absent)") != after.get(k, "(absent)")]
    if changed:
        first = changed[0]
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise BenchxferError(
            f"sweep {spec.name!r}: {file} is not the sweep started under this name ({sdir.spec_copy}): {first} was "
            f"{before.get(first, '(absent)')}, now {after.get(first, '(absent)')}{more}; its trials would be mixed "
            f"with the finished ones: give the file another `name:` to start another sweep, or restore it "
            f"(`benchxfer resume {spec.name}` continues the sweep that was started)")


def result_fields(spec: SweepSpec) -> dict[str, str]:
    """A sweep's values that decide its trials' results, flat (``overrides.epochs`` -> ``1``, ``seeds`` -> ``[0, 1]``;
    a dataset's root and a pre-training file absolute, as the schema reads them): its record without RUN_ONLY_FIELDS."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if dataclasses.is_dataclass(value):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) or dataclasses.is_dataclass(v)
                                                      for v in value):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        else:  # a value, or a list of values (``seeds`` -> ``[0, 1]``)
            flat[prefix] = repr(list(value) if isinstance(value, tuple) else value)

    walk("", {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in RUN_ONLY_FIELDS})
    return flat


def readable_source(sdir: SweepDir) -> str | None:
    """The sweep file a sweep was started from, or None where its record cannot be read."""
    try:
        return sdir.source()
    except BenchxferError:
        return None


def refuse_changed_trials(name: str, started: Plan, now: Plan, source: str) -> None:
    """``resume NAME`` resumes the sweep that was started. A sweep file since renamed or given other trials
    would make a different sweep: refuse, and show the difference."""
    if now.spec.name != name:
        raise BenchxferError(f"resume {name}: {source} now names the sweep {now.spec.name!r}; run it with "
                             f"`benchxfer sweep {source}`, or restore the name to resume")
    before, after = {t.key for t in started.trials}, {t.key for t in now.trials}
    if before != after:
        added, removed = sorted(after - before), sorted(before - after)
        diff = "; ".join(f"{label} {len(keys)} ({', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''})"
                         for label, keys in (("added", added), ("removed", removed)) if keys)
        raise BenchxferError(f"resume {name}: {source} has changed its trials since the sweep started: {diff}; "
                             f"run it as a new sweep under another name, or restore the file")

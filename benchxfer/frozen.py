"""``FrozenDict``: the read-only mapping of the sweep file's sections whose keys are open (a dataset's reader
options, per reader; the knob overrides, per recipe), which no dataclass of fixed fields can hold.

``benchxfer.plan.schema`` makes one once the values are checked; nothing after it can change it. It is a ``dict``
(as ``launch.tunespace.Point`` is), so that everything that reads one reads it as before: ``json`` writes it as a
plain object (trial keys and MLflow params are the bytes they were), ``{**x}`` and ``dict(x)`` give a plain copy
to change, it compares equal to a plain dict of the same items and prints as one. It pickles as itself (Ray
pickles the plan's trials). Its values are what the schema checked (numbers, strings; a reader's ``views``, a list
of names, stays the list the reader reads). No torch, no Ray.
"""

from __future__ import annotations

from typing import Any, NoReturn


class FrozenDict(dict):
    """A dict that refuses every change once made (``TypeError``, a programming error: make a changed copy)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{type(self).__name__} is read-only; change a copy: {{**it, key: value}}")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return type(self), (dict(self),)  # pickled by its items, not by setting them one by one

    def __copy__(self) -> FrozenDict:
        return self  # nothing to copy: it cannot change (a deep copy copies its values)

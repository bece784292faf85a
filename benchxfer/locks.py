"""Locks where two commands meet: a sweep's folder (``sweep``, ``resume``), a pre-training (``pretrain``), a
``train`` trial's folder, and a name in the zoo (``zoo import``).

A lock is a file made with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS v3+), so it works across the
nodes that share the home. It records its holder: host, pid, start time and command. A second command that
meets a held lock refuses in one line naming the holder. A lock whose holder ran on this host and no longer runs
(killed, the node rebooted) is stale: it is taken over, with a line saying so; two commands that find the same
stale lock take it over one at a time (``flock`` on a guard file beside it, which is enough because only
processes of that same host can judge the holder dead). A lock held on another host is never taken over: the
line says which file to remove if that process is gone.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from benchxfer import paths
from benchxfer.errors import BenchxferError

LOCKS = "locks"  # <home>/locks/
ATTEMPTS = 5


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    since: float
    command: str

    @classmethod
    def me(cls) -> Holder:
        command = " ".join(["benchxfer", *sys.argv[1:]])[:200]
        return cls(socket.gethostname(), os.getpid(), time.time(), command)

    def describe(self) -> str:
        since = datetime.datetime.fromtimestamp(self.since).isoformat(sep=" ", timespec="seconds")
        return f"`{self.command}` (pid {self.pid} on {self.host}, since {since})"

    def alive(self) -> bool | None:
        """Whether the holder still runs: None when it ran on another host (this one cannot tell)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a pid used again by a later process is not the holder, nor is a process that has ended (a zombie)
            import psutil

            proc = psutil.Process(self.pid)
            return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= self.since + 1
        except Exception:  # noqa: BLE001 - psutil missing or the process just ended: trust the pid
            return True


def _read(path: Path) -> Holder | None:
    """The holder recorded in ``path``; None when the file is gone, empty or not a holder record."""
    try:
        obj = json.loads(path.read_text())
        return Holder(str(obj["host"]), int(obj["pid"]), float(obj["since"]), str(obj["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _create(path: Path, me: Holder) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(asdict(me)))
        fh.flush()
        os.fsync(fh.fileno())
    return True


def acquire(path: Path, what: str, echo: Callable[[str], None] = print) -> Holder:
    """Take the lock ``path`` for this process, or refuse in one line naming its holder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BenchxferError(f"{what}: cannot make the lock folder {path.parent} ({err.strerror or err})") from None
    me = Holder.me()
    for _ in range(ATTEMPTS):
        try:
            if _create(path, me):
                return me
        except OSError as err:
            raise BenchxferError(f"{what}: cannot write the lock {path} ({err.strerror or err})") from None
        other = _read(path)
        if other is None:  # being written this instant, or damaged: look again shortly
            time.sleep(0.2)
            continue
        alive = other.alive()
        if alive is False:
            with open(path.with_name(path.name + ".guard"), "w") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                if _read(path) == other:
                    path.unlink(missing_ok=True)
                    echo(f"{what}: took over the stale lock {path} of {other.describe()}, which no longer runs")
            continue
        hint = "" if alive else f"; if that process is gone, remove {path}"
        raise BenchxferError(f"{what} is in use by {other.describe()}; wait for it to end{hint}")
    raise BenchxferError(f"{what}: the lock {path} is damaged (no holder recorded in it); "
                         "remove it if no other command is using it")


def release(path: Path, me: Holder) -> None:
    """Remove the lock if it is still this process's."""
    if _read(path) == me:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def held(path: Path, what: str, echo: Callable[[str], None] = print) -> Iterator[Holder]:
    me = acquire(path, what, echo)
    try:
        yield me
    finally:
        release(path, me)


def sweep_lock_path(name: str) -> Path:
    return paths.home() / LOCKS / f"sweep-{name}.lock"


def pretrain_lock_path(name: str) -> Path:
    """Held by a pre-training (``benchxfer pretrain``, or a sweep's ``{name, pretrain}`` init) while it runs."""
    return paths.home() / LOCKS / f"pretrain-{name}.lock"


def pretrain(name: str, echo: Callable[[str], None] = print) -> contextlib.AbstractContextManager[Holder]:
    """The lock a pre-training of init ``name`` holds while it runs (``pretrain``, or a sweep pre-training it)."""
    return held(pretrain_lock_path(name), f"pre-training {name!r}", echo)


def train_lock_path(sweep: str, key: str) -> Path:
    """Held by ``benchxfer train`` on its trial's folder while it trains."""
    return paths.home() / LOCKS / f"train-{sweep}-{key}.lock"


def sweep(name: str, echo: Callable[[str], None] = print) -> contextlib.AbstractContextManager[Holder]:
    """The lock a sweep (``sweep`` or ``resume``) holds on its folder for its whole life."""
    return held(sweep_lock_path(name), f"sweep {name!r}", echo)

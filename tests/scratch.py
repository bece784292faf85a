"""Scratch folders for tests that write large files and remove them: on tmpfs (``/dev/shm``) where there is one with
room, so that what a test writes and removes never goes to the disk, nor holds up through the kernel's writeback
the processes of the tests beside it (`make test` runs both tiers at once); else in the system's temporary folder.
A folder's name holds its process's id: the folders of processes that died before removing theirs (memory, on
tmpfs) are removed first."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

SHM = Path("/dev/shm")


def scratch_base(prefix: str, room_gb: float = 2.0, tmpfs: bool = True) -> Path:
    """A fresh folder named ``PREFIX<pid>-...``, on tmpfs when it has ``room_gb`` free (and ``tmpfs`` is not
    False: files of many GB beside a process of many GB belong on the disk)."""
    for folder in (SHM, Path(tempfile.gettempdir())):
        for old in folder.glob(f"{prefix}*-*"):
            pid = old.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and Path("/proc/self").exists() and not Path(f"/proc/{pid}").exists():
                subprocess.run(["rm", "-rf", "--one-file-system", str(old)], check=False)
    mine = f"{prefix}{os.getpid()}-"
    if tmpfs and SHM.is_dir() and os.access(SHM, os.W_OK):
        stat = os.statvfs(SHM)
        if stat.f_bavail * stat.f_frsize > room_gb * 2**30:
            return Path(tempfile.mkdtemp(prefix=mine, dir=SHM))
    return Path(tempfile.mkdtemp(prefix=mine))

"""Write one benchmark's section of BENCHMARKS.md, leaving the others as they are."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", GPU " + torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - torch missing is fine here
        pass
    return f"{os.cpu_count()} cores ({cpu}){gpu}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def record(name: str, title: str, command: str, body: str, print_only: bool = False) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md; ``print_only`` (a script's ``--no-record``): print
    the body and leave the file as it is."""
    if print_only:
        print(body)
        return
    date = _dt.date.today().isoformat()
    section = (
        f"<!-- {name} -->\n## {title}\n\n"
        f"- command: `{command}`\n- machine: {machine()}\n- date: {date}\n\n{body.strip()}\n"
        f"<!-- /{name} -->"
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else (
        "# Benchmarks\n\nEvery figure here was measured by the command shown with it. "
        "Run it again to reproduce.\n"
    )
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)
    print(section)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=BENCHMARKS_MD.parent).stdout.strip()
    except OSError:
        return ""

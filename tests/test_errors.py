"""The bad-input table of docs/errors.md, proved on the real command line.

Every case runs the ``benchxfer`` command line with ARGS and a fresh BENCHXFER_HOME
that already holds a finished trial of the sweep ``done``. Each must exit non-zero, print exactly one
line on stderr (no traceback) that names the culprit and what is allowed, and leave the finished trial
byte-identical with its mtime unchanged. Nothing here starts Ray or an MLflow server.

Importing torch costs seconds per process, so every case runs through click's test runner in this
process, and a few representative ones (COLD_CASES) also run as ``python -m benchxfer.cli ARGS`` in a
process of their own. ``BENCHXFER_ERRORS_COLD=1`` runs every case in its own process.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torchvision
from test_results import result_record

from benchxfer.data import synthetic

TIMEOUT_S = 120
COLD = os.environ.get("BENCHXFER_ERRORS_COLD") == "1"
# one per area, also run in a process of their own
COLD_CASES = ["yaml-syntax", "unknown-init", "list-path-escapes-root", "code-running-checkpoint",
              "status-unknown-sweep", "empty-home", "synthetic-over-own-files", "placement-timeout-abc",
              "home-symlink-loop", "sweep-held", "train-set-bad-yaml"]

RAY_LOG_LINE = re.compile(r"^(\x1b\[\d+m)?\(\w+ pid=\d+")


# --- two ways to run the command line ------------------------------------------------------------------

def cold_run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int | str, str, str]:
    """``python -m benchxfer.cli ARGS`` in a process of its own: what the user's shell runs."""
    try:
        res = subprocess.run([sys.executable, "-m", "benchxfer.cli", *args], check=False, env=env, cwd=cwd,
                             capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        return "timeout", str(exc.stdout or ""), str(exc.stderr or "")
    return res.returncode, res.stdout, res.stderr


def warm_run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int | str, str, str]:
    """The same command through click's test runner in this process (torch is imported once, not per case).
    An exception that escapes the command is written out as the traceback the interpreter would print."""
    from click.testing import CliRunner

    from benchxfer.cli import main

    old = os.getcwd()
    os.chdir(cwd)
    try:
        unset = {k: None for k in os.environ if k not in env}
        res = CliRunner().invoke(main, args, env={**unset, **env}, catch_exceptions=True, prog_name="benchxfer")
    finally:
        os.chdir(old)
    # a Ray session that an earlier test started in this process forwards its workers' logs to stderr
    # ("(RayTrainWorker pid=...) ..."); those lines are not the command's
    err = "".join(line for line in res.stderr.splitlines(keepends=True) if not RAY_LOG_LINE.match(line))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        err += "".join(traceback.format_exception(res.exception))
    return res.exit_code, res.stdout, err


# --- the files a user hands over, written in their real layouts ------------------------------------------

SMALL = {"n_train": 4, "n_val": 2, "n_test": 2, "size": 24}
GOOD = """\
name: done
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
    synthetic: {n_train: 4, n_val: 2, n_test: 2, size: 24}
lr: [0.001, 0.0001]
seeds: 1
overrides: {arch: resnet18, size: 32, epochs: 1}
"""
PRETRAIN = """\
name: mine
sources:
  - {dataset: chexpert, root: synthetic}
arch: resnet18
"""


@dataclass
class Files:
    tmp: Path
    kept: dict[str, dict[str, tuple[bytes, int]]] = field(default_factory=dict)  # folders that must stay intact
    kept_socket: object = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run after the case, pass or fail

    def write(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    def sweep(self, text: str, name: str = "s.yaml") -> str:
        return self.write(name, text)

    def good(self, old: str = "", new: str = "", add: str = "") -> str:
        """The valid sweep with one edit (``old`` -> ``new``) or one line more (``add``)."""
        assert not old or old in GOOD
        return self.sweep(GOOD.replace(old, new) + add)

    def nih(self) -> Path:
        """A small ChestX-ray14 copy in its real layout (images/ and the official list files)."""
        return synthetic.write("chestxray14", self.tmp / "nih", **SMALL)

    def list_file(self, name: str, lines: list[str]) -> str:
        return self.write(name, "\n".join(lines) + "\n")

    def keep(self, folder: Path) -> Path:
        """Remember every file of ``folder``; the case fails unless they are all intact afterwards."""
        self.kept[str(folder)] = snapshot(folder)
        return folder

    def resnet18(self, name: str = "r18.pth") -> str:
        torch.manual_seed(0)
        path = self.tmp / name
        torch.save(torchvision.models.resnet18().state_dict(), path)
        return str(path)


class MakesFile:
    """Unpickling this creates a file: the stand-in for a checkpoint that runs code."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _labels(n: int) -> str:
    return " ".join(["0"] * n)


def _first_image(root: Path) -> str:
    return (root / "Xray14_train_official.txt").read_text().split()[0]


def escaping_list(f: Files) -> list[str]:
    root = f.nih()
    bad = f.list_file("escape.txt", [f"../../etc/passwd {_labels(14)}"])
    return ["data", "verify", "chestxray14", "--root", str(root), "--lists", f"train={bad}", "--no-decode"]


def short_labels(f: Files) -> list[str]:
    root = f.nih()
    bad = f.list_file("bad.txt", [f"{_first_image(root)} {_labels(14)}", f"{_first_image(root)} 0 1 0"])
    return ["data", "verify", "chestxray14", "--root", str(root), "--lists", f"train={bad}", "--no-decode"]


def missing_image(f: Files) -> list[str]:
    root = f.nih()
    (root / "images" / _first_image(root)).unlink()
    return ["data", "verify", "chestxray14", "--root", str(root), "--no-decode"]


def truncated_checkpoint(f: Files) -> list[str]:
    full = Path(f.resnet18("full.pth"))
    cut = f.tmp / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    return ["zoo", "import", "mine", str(cut), "--format", "torchvision"]


def evil_checkpoint(f: Files) -> list[str]:
    """A torch.save file whose unpickling would call open() (and create <tmp>/pwned)."""
    path = f.tmp / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": MakesFile(f.tmp / "pwned")}, path)
    return ["zoo", "import", "mine", str(path)]


def evil_pickle(f: Files) -> list[str]:
    """The same payload written by pickle.dump (protocol 4, which torch also warns about)."""
    path = f.tmp / "evil.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": MakesFile(f.tmp / "pwned")}, fh)
    return ["zoo", "import", "mine", str(path)]


def pretrain_init(f: Files) -> list[str]:
    f.write("p.yaml", PRETRAIN)  # it makes 'mine'
    return ["sweep", f.good("inits: [scratch]", "inits: [{name: other, pretrain: p.yaml}]")]


def zoo_import_over(f: Files) -> list[str]:
    """``mine`` is already in the zoo; importing another file under the same name must not replace it."""
    from benchxfer.zoo.store import import_init

    zoo = f.tmp / "zoo"
    import_init("mine", f.resnet18("first.pth"), fmt="torchvision", zoo=zoo)
    f.keep(zoo)
    return ["zoo", "import", "mine", f.resnet18("second.pth"), "--format", "torchvision", "--zoo", str(zoo)]


def synthetic_over_other(f: Files) -> list[str]:
    """A folder benchxfer wrote for chestxray14 is not replaced by a synthetic chexpert."""
    root = f.keep(f.nih())
    return ["data", "synthetic", "chexpert", "--root", str(root), "--n-train", "2", "--n-val", "1", "--n-test", "1",
            "--size", "16"]


def synthetic_over_mine(f: Files) -> list[str]:
    """A folder of the user's own files is never deleted."""
    root = f.tmp / "mydata"
    (root / "images").mkdir(parents=True)
    (root / "notes.txt").write_text("my notes\n")
    (root / "images" / "scan.png").write_bytes(b"not really a png")
    f.keep(root)
    return ["data", "synthetic", "chestxray14", "--root", str(root), "--size", "16"]


def not_a_checkpoint_png(f: Files) -> list[str]:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(f.tmp / "scan.png")
    return ["zoo", "import", "mine", str(f.tmp / "scan.png")]


def not_a_checkpoint_bytes(f: Files) -> list[str]:
    import random

    (f.tmp / "noise.pth").write_bytes(bytes([0x42]) + random.Random(0).randbytes(999))
    return ["zoo", "import", "mine", str(f.tmp / "noise.pth")]


def port_in_use(f: Files) -> list[str]:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    f.kept_socket = sock  # held open until the case ends
    return ["ui", "--port", str(sock.getsockname()[1])]


def alias_bomb(f: Files) -> list[str]:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    return ["sweep", f.sweep("\n".join(lines) + "\ndescription: *a7\n"), "--dry-run"]


def binary_sweep(f: Files) -> list[str]:
    import random

    (f.tmp / "s.yaml").write_bytes(random.Random(0).randbytes(400))
    return ["sweep", str(f.tmp / "s.yaml"), "--dry-run"]


def started_sweep(f: Files, source_text: str) -> list[str]:
    """A sweep ``moved`` started from <tmp>/s.yaml (its copy and source.json in the home), then the file edited."""
    sdir = f.tmp.parent / "home" / "runs" / "moved"
    sdir.mkdir(parents=True)
    (sdir / "sweep.yaml").write_text(GOOD.replace("name: done", "name: moved"))
    source = f.sweep(source_text)
    (sdir / "source.json").write_text(json.dumps({"path": source}))
    f.keep(sdir)
    return ["resume", "moved"]


def good_dry(**edit) -> Callable[[Files], list[str]]:
    """``benchxfer sweep s.yaml --dry-run`` of the valid sweep with one edit."""
    return lambda f: ["sweep", f.good(**edit), "--dry-run"]


# --- round two: one validator, environment, damaged files, locks ------------------------------------------

def long_name(n: int) -> str:
    return ("a" * n)


def env_var(var: str, value: str) -> Callable[[Path, Path], dict[str, str | None]]:
    return lambda work, home: {var: value}


def home_symlink_loop(work: Path, home: Path) -> dict[str, str | None]:
    (work / "loop-a").symlink_to(work / "loop-b")
    (work / "loop-b").symlink_to(work / "loop-a")
    return {"BENCHXFER_HOME": str(work / "loop-a")}


def cache_env_file(work: Path, home: Path) -> dict[str, str | None]:
    (work / "cache.txt").write_text("x")
    return {"BENCHXFER_CACHE": str(work / "cache.txt")}


def cache_never_built(f: Files) -> list[str]:
    root = f.nih()
    return ["sweep", f.good("root: synthetic", f"root: {root}\n    options: {{cache_size: 16}}"), "--dry-run"]


def shots_over_the_set(f: Files) -> list[str]:
    root = f.nih()
    return ["sweep", f.good("root: synthetic", f"root: {root}", add="shots: [50]\n"), "--dry-run"]


def chexpert_root(f: Files) -> Path:
    return synthetic.write("chexpert", f.tmp / "chex", **SMALL)


def latin1_csv(f: Files) -> list[str]:
    root = chexpert_root(f)
    csv = root / "train.csv"
    lines = csv.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"patient", b"pati\xe9nt", 1)
    csv.write_bytes(b"\n".join(lines))
    return ["data", "verify", "chexpert", "--root", str(root), "--no-decode"]


def latin1_list(f: Files) -> list[str]:
    root = f.nih()
    text = (root / "Xray14_train_official.txt").read_bytes()
    listing = f.tmp / "latin1.txt"
    listing.write_bytes(b"# caf\xe9\n" + text)
    return ["data", "verify", "chestxray14", "--root", str(root), "--lists", f"train={listing}", "--no-decode"]


def truncated_csv_gz(f: Files) -> list[str]:
    import gzip

    root = synthetic.write("mimic-cxr", f.tmp / "mimic", **SMALL)
    csv = root / "mimic-cxr-2.0.0-chexpert.csv"
    packed = gzip.compress(csv.read_bytes())
    (root / f"{csv.name}.gz").write_bytes(packed[: len(packed) // 2])
    csv.unlink()
    return ["data", "verify", "mimic-cxr", "--root", str(root), "--no-decode"]


def utf16_sweep(f: Files) -> list[str]:
    (f.tmp / "s.yaml").write_text(GOOD, encoding="utf-16")
    return ["sweep", str(f.tmp / "s.yaml"), "--dry-run"]


def symlink_loop_sweep(f: Files) -> list[str]:
    (f.tmp / "s.yaml").symlink_to(f.tmp / "t.yaml")
    (f.tmp / "t.yaml").symlink_to(f.tmp / "s.yaml")
    return ["sweep", str(f.tmp / "s.yaml"), "--dry-run"]


def resume_without_copy(f: Files) -> list[str]:
    """A started sweep ``tiny`` whose runs/tiny/sweep.yaml was deleted."""
    sdir = f.tmp.parent / "home" / "runs" / "tiny"
    sdir.mkdir(parents=True)
    source = f.good("name: done", "name: tiny")
    (sdir / "source.json").write_text(json.dumps({"path": source}))
    (sdir / "trials.json").write_text("[]")
    f.keep(sdir)
    return ["resume", "tiny"]


def nan_checkpoint(f: Files) -> list[str]:
    state = torchvision.models.resnet18().state_dict()
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
               f.tmp / "nan.pth")
    return ["zoo", "import", "mine", str(f.tmp / "nan.pth"), "--format", "torchvision", "--zoo", str(f.tmp / "zoo")]


def read_only_zoo(f: Files) -> list[str]:
    """A zoo folder nobody may write into: immutable for root (who ignores permissions), mode 0555 otherwise."""
    zoo = f.tmp / "zoo"
    zoo.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(zoo)], check=True)
        f.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(zoo)], check=False))
    else:
        zoo.chmod(0o555)
        f.cleanups.append(lambda: zoo.chmod(0o755))
    return ["zoo", "import", "mine", f.resnet18(), "--format", "torchvision", "--zoo", str(zoo)]


def sweep_held(f: Files) -> list[str]:
    """Sweep ``done`` is held by a live process (this one, which the lock records as another command)."""
    import socket
    import time

    locks = f.tmp.parent / "home" / "locks"
    locks.mkdir(parents=True)
    (locks / "sweep-done.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                        "since": time.time(), "command": "benchxfer resume done"}))
    f.keep(locks)
    return ["sweep", f.good()]


# --- round three (issue 34): a name is not an identity ---------------------------------------------------

def home_dangling_link(work: Path, home: Path) -> dict[str, str | None]:
    """$BENCHXFER_ZOO is a link to a share that is not mounted: named, and its target never made."""
    (work / "share").symlink_to(work / "mnt" / "share")
    return {"BENCHXFER_ZOO": str(work / "share" / "zoo")}


def pretrain_over_import(f: Files) -> list[str]:
    """``mine`` was imported into the zoo; a pre-training file named ``mine`` must not replace it."""
    from benchxfer.zoo.store import import_init

    zoo = f.tmp / "zoo"
    import_init("mine", f.resnet18("first.pth"), fmt="torchvision", zoo=zoo)
    f.keep(zoo)
    return ["pretrain", f.write("p.yaml", PRETRAIN), "--zoo", str(zoo)]


def report_over_own_files(f: Files) -> list[str]:
    """The user's own summary.csv, table.md and report.html in the folder given as --out are never replaced."""
    mine = f.tmp / "paper"
    mine.mkdir()
    for name in ("summary.csv", "table.md", "report.html"):
        (mine / name).write_text(f"my own {name}\n")
    f.keep(mine)
    return ["report", "done", "--out", str(mine)]


def sweep_file_changed(f: Files) -> list[str]:
    """Sweep ``moved`` started from <tmp>/s.yaml with epochs 1; the file now says epochs 2, same name."""
    started_sweep(f, GOOD.replace("name: done", "name: moved"))
    return ["sweep", f.sweep(GOOD.replace("name: done", "name: moved").replace("epochs: 1", "epochs: 2"))]


def sweep_file_changed_dry(f: Files) -> list[str]:
    """As sweep_file_changed, listed with --dry-run: the dry run refuses what the real run would."""
    return [*sweep_file_changed(f), "--dry-run"]


def resume_other_store(f: Files) -> list[str]:
    """Sweep ``moved`` recorded its runs on a team server; `resume moved` without --tracking-uri would record in
    the home's own store."""
    sdir = f.tmp.parent / "home" / "runs" / "moved"
    sdir.mkdir(parents=True)
    (sdir / "sweep.yaml").write_text(GOOD.replace("name: done", "name: moved"))
    (sdir / "source.json").write_text(json.dumps({"path": f.sweep(GOOD.replace("name: done", "name: moved"))}))
    (sdir / "tracking.json").write_text(json.dumps({"store": "http://team.example:5000"}))
    f.keep(sdir)
    return ["resume", "moved"]


def sweep_folder_loop(f: Files) -> list[str]:
    """<home>/runs/loopa and loopb link to each other."""
    runs = f.tmp.parent / "home" / "runs"
    (runs / "loopa").symlink_to(runs / "loopb")
    (runs / "loopb").symlink_to(runs / "loopa")
    return ["status", "loopa"]


def sqlite_folder(f: Files) -> list[str]:
    (f.tmp / "dbdir").mkdir()
    return ["sweep", f.good(), "--tracking-uri", f"sqlite:///{f.tmp / 'dbdir'}"]


def held_lock(name: str, command: str) -> Callable[[Files], None]:
    """A lock in <home>/locks held by a live process (this one, recorded as another command)."""
    import socket
    import time

    def plant(f: Files) -> None:
        locks = f.tmp.parent / "home" / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        (locks / name).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                                              "command": command}))
        f.keep(locks)
    return plant


def train_held(f: Files) -> list[str]:
    from benchxfer.plan.planning import make_plan

    path = f.good()
    key = make_plan(path, dry_run=True).trials[0].key
    held_lock(f"train-done-{key}.lock", "benchxfer train s.yaml")(f)
    return ["train", path]


def declared_sizes_bomb(f: Files) -> list[str]:
    """A torch.save zip rewritten with its records deflated: 64 MiB of zeros declared in a 65 KB file (the issue's
    was 8 GiB in 37 MB), refused from the zip's directory before torch.load allocates anything."""
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(16 << 20)}, buf)
    buf.seek(0)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(f.tmp / "bomb.pth", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return ["zoo", "import", "mine", str(f.tmp / "bomb.pth"), "--zoo", str(f.tmp / "zoo")]


def crafted_storage(f: Files, legacy: bool = False) -> str:
    """A small torch.save file whose pickle's storage record is patched to declare 8 GiB (2**31 float32s) while
    the bytes stored stay 0.5 MB: torch.load allocates what the pickle declares (a legacy file before it reads it)."""
    import io
    import struct
    import zipfile

    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(123457)}, buf, _use_new_zipfile_serialization=not legacy)
    numel = b"J" + struct.pack("<i", 123457)  # BININT: first the storage's numel, then the tensor's size
    eight_gib = b"\x8a\x05" + (2 << 30).to_bytes(5, "little", signed=True)  # LONG1
    path = f.tmp / ("legacy.pth" if legacy else "crafted.pth")
    if legacy:
        path.write_bytes(buf.getvalue().replace(numel, eight_gib, 1))
        return str(path)
    buf.seek(0)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            dst.writestr(info.filename, data.replace(numel, eight_gib, 1) if info.filename.endswith("/data.pkl")
                         else data)
    return str(path)


def storage_over_record(f: Files) -> list[str]:
    return ["zoo", "import", "mine", crafted_storage(f), "--zoo", str(f.tmp / "zoo")]


def storage_over_arch(f: Files) -> list[str]:
    return ["zoo", "import", "imagenet", crafted_storage(f), "--zoo", str(f.tmp / "zoo")]


def legacy_storage_over_file(f: Files) -> list[str]:
    return ["zoo", "import", "mine", crafted_storage(f, legacy=True), "--zoo", str(f.tmp / "zoo")]


def pretrain_held(f: Files) -> list[str]:
    held_lock("pretrain-mine.lock", "benchxfer pretrain p.yaml")(f)
    return ["pretrain", f.write("p.yaml", PRETRAIN)]


# --- the cases ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    where: str  # sweep file / dataset / checkpoint / pretrain file / CLI
    what: str  # what the user did (for docs/errors.md)
    args: Callable[[Files], list[str]]
    expect: tuple[str, ...]  # substrings of the one stderr line; "<tmp>" stands for the test's folder
    env: Callable[[Path, Path], dict[str, str | None]] | None = None  # (work, home) -> variables to set or unset


S = "<tmp>/s.yaml: "  # the start of a line about the sweep file

CASES = [
    # sweep files: `benchxfer sweep FILE`
    Case("yaml-syntax", "sweep file", "`inits: [scratch` (an unclosed bracket)",
         lambda f: ["sweep", f.sweep("name: t\ninits: [scratch\n")],
         ("Error: <tmp>/s.yaml: YAML syntax error at line 3, column 1: expected ',' or ']', but got '<stream end>'",)),
    Case("missing-sweep-file", "sweep file", "a sweep file that does not exist",
         lambda f: ["sweep", str(f.tmp / "nope.yaml")], ("Error: <tmp>/nope.yaml: no such file",)),
    Case("unknown-top-key", "sweep file", "a top-level key that does not exist (`colour:`)",
         lambda f: ["sweep", f.good(add="colour: red\n")],
         (("<tmp>/s.yaml: colour: unknown key; allowed: datasets, description, failure, inits, keep, lr, mode, "
          "name, overrides, recipe, resources, seeds, shots"),)),
    Case("unknown-init", "sweep file", "`inits: [moco-v9]` (no such init)",
         lambda f: ["sweep", f.good("[scratch]", "[moco-v9]")],
         ("<tmp>/s.yaml: inits[0]: unknown init 'moco-v9'; known:", "moco-v2", "imagenet")),
    Case("unknown-dataset", "sweep file", "a dataset `name: nih` (registered as chestxray14)",
         lambda f: ["sweep", f.good("name: chestxray14", "name: nih")],
         ("<tmp>/s.yaml: datasets[0].name: unknown dataset 'nih'; known: chestxray14, chexpert",)),
    Case("missing-data-folder", "sweep file", "a dataset `root: nowhere` (no such folder)",
         lambda f: ["sweep", f.good("root: synthetic", "root: nowhere")],
         ("<tmp>/s.yaml: datasets[0].root: folder <tmp>/nowhere does not exist (dataset 'chestxray14')",)),
    Case("non-positive-lr", "sweep file", "`lr: [0.001, -1]`",
         lambda f: ["sweep", f.good("[0.001, 0.0001]", "[0.001, -1]")],
         ("<tmp>/s.yaml: lr[1]: must be a positive number, got -1",)),
    Case("repeated-seed", "sweep file", "`seeds: [1, 1]`",
         lambda f: ["sweep", f.good("seeds: 1", "seeds: [1, 1]")], ("<tmp>/s.yaml: seeds: repeats a seed: [1, 1]",)),
    Case("zero-seeds", "sweep file", "`seeds: 0`",
         lambda f: ["sweep", f.good("seeds: 1", "seeds: 0")], ("<tmp>/s.yaml: seeds: must be an integer >= 1, got 0",)),
    Case("unknown-resource", "sweep file", "`resources: {gpus: 1}` (the key is gpus_per_worker)",
         lambda f: ["sweep", f.good(add="resources: {gpus: 1}\n")],
         (("<tmp>/s.yaml: resources.gpus: unknown key; allowed: cpus_per_worker, gpus_per_worker, max_concurrent, "
          "trainer, workers"),)),
    Case("bad-trainer", "sweep file", "`resources.trainer: ray`",
         lambda f: ["sweep", f.good(add="resources: {trainer: ray}\n")],
         ("<tmp>/s.yaml: resources.trainer: must be one of auto, torch, direct, got 'ray'",)),
    Case("lr-search-kind", "sweep file", "`lr: {search: grid, low: 0.0001, high: 0.1}`",
         lambda f: ["sweep", f.good("[0.001, 0.0001]", "{search: grid, low: 0.0001, high: 0.1}")],
         ("<tmp>/s.yaml: lr.search: must be 'loguniform', got 'grid'",)),
    Case("lr-search-bounds", "sweep file", "`lr: {search: loguniform, low: 0.1, high: 0.01}`",
         lambda f: ["sweep", f.good("[0.001, 0.0001]", "{search: loguniform, low: 0.1, high: 0.01}")],
         ("<tmp>/s.yaml: lr: low (0.1) must be below high (0.01)",)),
    Case("tune-without-search", "sweep file", "`mode: tune-then-repeat` with a fixed lr list",
         lambda f: ["sweep", f.good(add="mode: tune-then-repeat\n")],
         ("<tmp>/s.yaml: lr: mode tune-then-repeat needs an lr search: {search: loguniform, low, high, trials}",)),
    Case("unknown-override", "sweep file", "`overrides: {epoch: 1}` (the knob is epochs)",
         lambda f: ["sweep", f.good("epochs: 1", "epoch: 1")],
         ("<tmp>/s.yaml: overrides: unknown override 'epoch'; allowed:", "batch_size", "epochs")),
    Case("bad-override-value", "sweep file", "`overrides: {epochs: many}`",
         lambda f: ["sweep", f.good("epochs: 1", "epochs: many")],
         ("<tmp>/s.yaml: overrides: override epochs='many' must be an integer",)),
    Case("unknown-arch", "sweep file", "`overrides: {arch: vgg16}`",
         lambda f: ["sweep", f.good("arch: resnet18", "arch: vgg16")],
         ("<tmp>/s.yaml: datasets[0] (chestxray14): unknown arch 'vgg16'; known:", "resnet18", "resnet50")),
    Case("unknown-recipe", "sweep file", "`recipe: fancy`",
         lambda f: ["sweep", f.good(add="recipe: fancy\n")],
         (("<tmp>/s.yaml: recipe: unknown recipe 'fancy'; known: auto, bit-hyperrule, supervised-pretrain, "
          "systematic-cls, systematic-seg"),)),
    Case("recipe-task-mismatch", "sweep file", "`recipe: systematic-seg` on ChestX-ray14 (multi-label)",
         lambda f: ["sweep", f.good(add="recipe: systematic-seg\n")],
         (("<tmp>/s.yaml: datasets[0] (chestxray14): recipe 'systematic-seg' trains segmentation tasks, "
          "not multilabel"),)),
    Case("unknown-reader-option", "sweep file", "a dataset `options: {val_fration: 0.2}` (misspelt)",
         lambda f: ["sweep", f.good("root: synthetic", "root: synthetic\n    options: {val_fration: 0.2}")],
         ("<tmp>/s.yaml: datasets[0].options: dataset 'chestxray14': unknown option(s) val_fration; it takes:",
          "val_fraction")),
    # datasets: `benchxfer data verify`
    Case("list-path-escapes-root", "dataset", "a list file naming `../../etc/passwd`",
         escaping_list, (("Error: chestxray14 at <tmp>/nih: 2 problem(s), the first: <tmp>/escape.txt:1: path "
                         "'../../etc/passwd' escapes the dataset root <tmp>/nih/images ('..' is not allowed)"),)),
    Case("wrong-label-count", "dataset", "a list-file line with 3 labels instead of 14",
         short_labels, (("Error: chestxray14 at <tmp>/nih: 1 problem(s), the first: <tmp>/bad.txt:2: 3 labels, "
                        "expected 14"),)),
    Case("missing-image", "dataset", "a list file naming an image that is not there",
         missing_image, (("Error: chestxray14 at <tmp>/nih: 1 problem(s), the first: "
                         "<tmp>/nih/Xray14_train_official.txt:1: image <tmp>/nih/images/"), ".png is missing")),
    Case("verify-unknown-dataset", "dataset", "`data verify` of a dataset name that is not registered",
         lambda f: ["data", "verify", "nih", "--root", str(f.tmp)],
         ("Error: unknown dataset 'nih'; known: chestxray14, chexpert",)),
    Case("verify-missing-root", "dataset", "`data verify` of a folder that does not exist",
         lambda f: ["data", "verify", "chestxray14", "--root", str(f.tmp / "nowhere")],
         ("dataset 'chestxray14': root <tmp>/nowhere does not exist or is not a folder",)),
    Case("bad-lists-option", "dataset", "`--lists training=FILE` (the split is train)",
         lambda f: ["data", "verify", "chestxray14", "--root", str(f.tmp), "--lists", "training=x.txt"],
         ("--lists 'training=x.txt': use SPLIT=FILE with SPLIT one of train, val, test",)),
    # checkpoints: `benchxfer zoo import` / `zoo verify`, and a sweep naming an init without its file
    Case("truncated-checkpoint", "checkpoint", "`zoo import` of a file cut to a third",
         truncated_checkpoint, ("<tmp>/cut.pth", "truncated")),
    Case("code-running-checkpoint", "checkpoint", "`zoo import` of a torch.save file that runs code when loaded",
         evil_checkpoint, (("Error: refused <tmp>/evil.pth: unpickling it needs the Python callable io.open, "
                           "which could run arbitrary code, so it was not loaded"),)),
    Case("code-running-pickle", "checkpoint", "`zoo import` of a plain pickle (protocol 4) that runs code",
         evil_pickle, ("Error: refused <tmp>/evil.pkl:", "so it was not loaded")),
    Case("wrong-architecture", "checkpoint", "`zoo import imagenet` of a ResNet-18 file (imagenet is a ResNet-50)",
         lambda f: ["zoo", "import", "imagenet", f.resnet18()], ("<tmp>/r18.pth", "resnet18", "resnet50")),
    Case("unknown-format", "checkpoint", "`zoo import --format mocov9`",
         lambda f: ["zoo", "import", "mine", f.resnet18(), "--format", "mocov9"],
         ("'mocov9'", "moco", "torchvision")),
    Case("byol-without-trust", "checkpoint", "`zoo import byol` without `--trust`",
         lambda f: ["zoo", "import", "byol", f.resnet18()], ("byol-haiku", "--trust")),
    Case("verify-unknown-init", "checkpoint", "`zoo verify` of an init that does not exist",
         lambda f: ["zoo", "verify", "moco-v9"], ("Error: unknown init 'moco-v9'; known:", "moco-v2")),
    Case("init-file-missing", "checkpoint", "`inits: [moco-v2]` before `zoo import moco-v2`",
         lambda f: ["sweep", f.good("[scratch]", "[moco-v2]").replace("arch: resnet18", "arch: resnet50")],
         ("moco-v2", "benchxfer zoo import moco-v2")),
    # pre-training files: `benchxfer pretrain FILE`, and a sweep's `inits: [{name, pretrain}]`
    Case("pretrain-no-sources", "pretrain file", "a pre-training file without `sources:`",
         lambda f: ["pretrain", f.write("p.yaml", "name: mine\narch: resnet18\n")],
         ("<tmp>/p.yaml: sources: must be a non-empty list of {dataset, root} entries",)),
    Case("pretrain-unknown-dataset", "pretrain file", "a pre-training source `dataset: nih`",
         lambda f: ["pretrain", f.write("p.yaml", PRETRAIN.replace("chexpert", "nih"))],
         ("<tmp>/p.yaml: sources[0].dataset: unknown dataset 'nih'; known: chestxray14, chexpert",)),
    Case("pretrain-unknown-recipe", "pretrain file", "a pre-training file with `recipe: fancy`",
         lambda f: ["pretrain", f.write("p.yaml", PRETRAIN + "recipe: fancy\n")],
         ("<tmp>/p.yaml: recipe: unknown recipe 'fancy'; known: bit-hyperrule, supervised-pretrain",)),
    Case("pretrain-name-mismatch", "pretrain file",
         "`inits: [{name: other, pretrain: p.yaml}]` where p.yaml makes `mine`",
         pretrain_init, ("<tmp>/s.yaml: inits[0]: <tmp>/p.yaml makes 'mine', not 'other'",)),
    # CLI options
    Case("status-unknown-sweep", "CLI", "`status` of a sweep that never ran",
         lambda f: ["status", "ghost"], ("no sweep named 'ghost' in <home>/runs",)),
    Case("resume-changed-trials", "CLI", "`resume NAME` after its sweep file gained a seed",
         lambda f: started_sweep(f, GOOD.replace("name: done", "name: moved").replace("seeds: 1", "seeds: 2")),
         ("Error: resume moved: <tmp>/s.yaml has changed its trials since the sweep started: added 2 (",
          "run it as a new sweep under another name, or restore the file")),
    Case("resume-renamed", "CLI", "`resume NAME` after its sweep file was given another `name:`",
         lambda f: started_sweep(f, GOOD.replace("name: done", "name: other")),
         ("Error: resume moved: <tmp>/s.yaml now names the sweep 'other'",)),
    Case("pretrain-output-builtin", "pretrain file", "`benchxfer pretrain p.yaml` whose `name: imagenet` is built in",
         lambda f: ["pretrain", f.write("p.yaml", PRETRAIN.replace("name: mine", "name: imagenet"))],
         ("Error: <tmp>/p.yaml: name: 'imagenet' is a built-in init; give the pre-trained backbone a new name",)),
    Case("resume-unknown-sweep", "CLI", "`resume` of a sweep that never ran",
         lambda f: ["resume", "ghost"], ("no sweep named 'ghost' in <home>/runs; known: done",)),
    Case("report-unknown-sweep", "CLI", "`report` of a sweep that never ran, with a dead `--tracking-uri`",
         lambda f: ["report", "ghost", "--tracking-uri", "http://127.0.0.1:9"],
         ("no runs for sweep 'ghost'; looked in: MLflow at http://127.0.0.1:9 (unreachable", "<home>/runs/ghost")),
    Case("report-unknown-baseline", "CLI", "`report --baseline` of an init the sweep does not have",
         lambda f: ["report", "done", "--baseline", "bit"],
         ("Error: baseline init 'bit' is not in the runs; inits: scratch",)),
    Case("report-out-under-a-file", "CLI", "`report --out` inside a path that is a file",
         lambda f: ["report", "done", "--out", f.write("notes.txt", "my notes\n") + "/report"],
         ("Error: cannot create the report folder <tmp>/notes.txt/report: Not a directory",)),
    Case("train-trial-out-of-range", "CLI", "`train --trial 9` on a sweep of 2 trials",
         lambda f: ["train", f.good(), "--trial", "9"], ("--trial 9: the sweep has trials 0 to 1",)),
    Case("train-set-unknown-knob", "CLI", "`train --set epoch=2`",
         lambda f: ["train", f.good(), "--set", "epoch=2"], ("--set: unknown override 'epoch'; allowed:", "epochs")),
    Case("train-set-malformed", "CLI", "`train --set epochs` (no `=VALUE`)",
         lambda f: ["train", f.good(), "--set", "epochs"], ("--set 'epochs': expected KEY=VALUE",)),
    Case("tracking-server-down", "CLI", "`sweep --tracking-uri` of an MLflow server that is not running",
         lambda f: ["sweep", f.good(), "--tracking-uri", "http://127.0.0.1:9"],
         ("Error: cannot reach the MLflow tracking server at http://127.0.0.1:9:",)),
    Case("option-not-an-integer", "CLI", "`train --trial abc`",
         lambda f: ["train", f.good(), "--trial", "abc"],
         ("Error: Invalid value for '--trial': 'abc' is not a valid integer. (see `benchxfer train --help`)",)),
    Case("unknown-command", "CLI", "`benchxfer sweeep` (a typo)",
         lambda f: ["sweeep", f.good()], ("Error: No such command 'sweeep'. (see `benchxfer --help`)",)),

    # data that must survive a mistake (each asserts the files are intact afterwards)
    Case("zoo-import-over-existing", "data loss", "`zoo import mine FILE` when `mine` is already in the zoo",
         zoo_import_over, ("Error: init 'mine' is already in the zoo (sha256 ", "imported 20", "from <tmp>/first.pth",
                           "pass --force to replace it")),
    Case("synthetic-over-another-dataset", "data loss", "`data synthetic chexpert --root DIR`, DIR holding a synthetic chestxray14",
         synthetic_over_other, ("Error: synthetic chexpert: <tmp>/nih holds benchxfer's synthetic 'chestxray14', not "
                                "'chexpert'; refusing to overwrite it",)),
    Case("synthetic-over-own-files", "data loss", "`data synthetic chestxray14 --root DIR`, DIR holding the user's files",
         synthetic_over_mine, ("Error: synthetic chestxray14: <tmp>/mydata is not empty and was not written by "
                               "benchxfer; refusing to overwrite it",)),
    Case("empty-home", "home", "`BENCHXFER_HOME=` (set but empty)",
         lambda f: ["status", "done"], ("Error: $BENCHXFER_HOME is set but empty; unset it or give a folder",),
         env=lambda work, home: {"BENCHXFER_HOME": ""}),
    Case("home-is-a-file", "home", "`BENCHXFER_HOME` naming a file",
         lambda f: ["status", "done"], ("Error: $BENCHXFER_HOME <tmp>/notes.txt: <tmp>/notes.txt is a file, not a folder",),
         env=lambda work, home: {"BENCHXFER_HOME": str(work / "notes.txt")} if (work / "notes.txt").write_text("x") else {}),
    Case("zoo-is-a-file", "home", "`BENCHXFER_ZOO` naming a file",
         lambda f: ["zoo", "list"], ("Error: $BENCHXFER_ZOO <tmp>/zoo.txt: <tmp>/zoo.txt is a file, not a folder",),
         env=lambda work, home: {"BENCHXFER_ZOO": str(work / "zoo.txt")} if (work / "zoo.txt").write_text("x") else {}),
    Case("cache-dir-is-a-file", "home", "`data cache --cache-dir FILE`",
         lambda f: ["data", "cache", "chestxray14", "--root", str(f.nih()), "--size", "16",
                    "--cache-dir", f.write("c.txt", "x")],
         ("Error: cache folder <tmp>/c.txt: <tmp>/c.txt is a file, not a folder",)),
    # wrong accepts, refused in the dry run (one schema for values, with ranges)
    Case("zero-epochs", "sweep file", "`overrides: {epochs: 0}`", good_dry(old="epochs: 1", new="epochs: 0"),
         (S + "overrides: epochs must be an integer >= 1, got 0",)),
    Case("negative-epochs", "sweep file", "`overrides: {epochs: -3}`", good_dry(old="epochs: 1", new="epochs: -3"),
         (S + "overrides: epochs must be an integer >= 1, got -3",)),
    Case("zero-batch-size", "sweep file", "`overrides: {batch_size: 0}`",
         good_dry(old="epochs: 1", new="epochs: 1, batch_size: 0"), (S + "overrides: batch_size must be an integer >= 1, got 0",)),
    Case("zero-size", "sweep file", "`overrides: {size: 0}`", good_dry(old="size: 32", new="size: 0"),
         (S + "overrides: size must be an integer in [8, 4096], got 0",)),
    Case("unknown-augment", "sweep file", "`overrides: {augment: banana}`",
         good_dry(old="epochs: 1", new="epochs: 1, augment: banana"),
         (S + "overrides: augment must be one of bit-hyperrule, plain, supervised-pretrain, systematic-cls, "
          "systematic-seg, got 'banana'",)),
    Case("negative-loader-workers", "sweep file", "`overrides: {loader_workers: -1}`",
         good_dry(old="epochs: 1", new="epochs: 1, loader_workers: -1"),
         (S + "overrides: loader_workers must be an integer in [0, 256], got -1",)),
    Case("negative-momentum", "sweep file", "`overrides: {momentum: -5}`",
         good_dry(old="epochs: 1", new="epochs: 1, momentum: -5"), (S + "overrides: momentum must be a number in [0, 1], got -5",)),
    Case("dataset-override-range", "sweep file", "a dataset's `overrides: {patience: -1}`",
         good_dry(old="root: synthetic", new="root: synthetic\n    overrides: {patience: -1}"),
         (S + "datasets[0].overrides: patience must be an integer >= 0, got -1",)),
    Case("empty-synthetic-set", "sweep file", "`synthetic: {n_train: 0, n_val: 0, n_test: 0}`",
         good_dry(old="n_train: 4, n_val: 2, n_test: 2", new="n_train: 0, n_val: 0, n_test: 0"),
         (S + "datasets[0].synthetic: an empty set (n_train 0, n_val 0, n_test 0); n_train must be >= 1",)),
    Case("synthetic-misspelt-key", "sweep file", "`synthetic: {n_trian: 4}` (misspelt)",
         good_dry(old="n_train: 4", new="n_trian: 4"),
         (S + "datasets[0].synthetic.n_trian: unknown key; allowed: n_train, n_val, n_test, size, seed, family",)),
    Case("synthetic-wrong-type", "sweep file", "`synthetic: {n_train: four}`",
         good_dry(old="n_train: 4", new="n_train: four"),
         (S + "datasets[0].synthetic: n_train must be an integer in [0, 100000], got 'four'",)),
    Case("synthetic-zero-size", "sweep file", "`synthetic: {size: 0}`", good_dry(old="size: 24", new="size: 0"),
         (S + "datasets[0].synthetic: size must be an integer in [8, 4096], got 0",)),
    Case("synthetic-not-a-mapping", "sweep file", "`synthetic: 4`", good_dry(old="{n_train: 4, n_val: 2, n_test: 2, size: 24}", new="4"),
         (S + "datasets[0].synthetic: must be a mapping, got int",)),
    Case("search-without-tune", "sweep file", "an lr search block without `mode: tune-then-repeat`",
         good_dry(old="[0.001, 0.0001]", new="{search: loguniform, low: 0.0001, high: 0.1, trials: 2}"),
         (S + "lr: an lr search needs mode: tune-then-repeat (mode is 'grid'); or give a list of lr values",)),
    Case("direct-with-workers", "sweep file", "`resources: {trainer: direct, workers: 2}`",
         good_dry(add="resources: {trainer: direct, workers: 2}\n"),
         (S + "resources: trainer 'direct' runs one process, but workers is 2; use trainer 'torch' or 'auto'",)),
    Case("numeric-name", "sweep file", "`name: 0`", good_dry(old="name: done", new="name: 0"),
         (S + "name: must be a name of lower-case letters, digits, '.', '_' or '-' (at most 64 characters), got 0",)),
    Case("name-from-file-name", "sweep file", "no `name:`, in a file called `My Sweep.yaml`",
         lambda f: ["sweep", f.sweep(GOOD.replace("name: done\n", ""), name="My Sweep.yaml"), "--dry-run"],
         ("<tmp>/My Sweep.yaml: name: not set, and the file name gives 'My Sweep'", "add a name: key")),
    Case("shots-on-segmentation", "sweep file", "`shots: [5]` with a segmentation dataset (montgomery-lungs)",
         good_dry(old="chestxray14", new="montgomery-lungs", add="shots: [5]\n"),
         (S + "shots: dataset 'montgomery-lungs' (datasets[0]) is a segmentation task; shots apply to classification "
          "datasets only",)),
    Case("shots-zero", "sweep file", "`shots: [0, full]`", good_dry(add="shots: [0, full]\n"),
         (S + "shots[0]: must be an integer >= 1 (images per class) or 'full', got 0",)),
    Case("reader-option-value", "sweep file", "a dataset `options: {official: banana}`",
         good_dry(old="root: synthetic", new="root: synthetic\n    options: {official: banana}"),
         (S + "datasets[0].options: official must be one of first-study, nih, got 'banana'",)),
    Case("reader-option-range", "sweep file", "a dataset `options: {val_fraction: 5}`",
         good_dry(old="root: synthetic", new="root: synthetic\n    options: {val_fraction: 5}"),
         (S + "datasets[0].options: val_fraction must be a number in [0, 1), got 5",)),
    Case("duplicate-key", "sweep file", "`seeds:` written twice", good_dry(add="seeds: 2\n"),
         (S + "YAML syntax error at line 10, column 1: duplicate key 'seeds' (first on line 8)",)),
    Case("too-many-seeds", "sweep file", "`seeds: 10000000` (answers at once)",
         good_dry(old="seeds: 1", new="seeds: 10000000"),
         (S + "seeds: 10000000 seeds is more than a sweep may run (10000 trials)",)),
    Case("too-many-trials", "sweep file", "`seeds: 5001` with two lr values (10002 trials)",
         good_dry(old="seeds: 1", new="seeds: 5001"),
         (S + "the sweep expands to 10002 trials (1 init x dataset cells, 10002 trials each); the limit is 10000",)),
    Case("alias-bomb", "sweep file", "a YAML alias bomb (10^8 values from 8 lines)", alias_bomb,
         (S + "line 5: the document expands to more than 100000 values (YAML aliases repeat what they name)",)),
    Case("deep-nesting", "sweep file", "a value nested 5000 levels deep",
         lambda f: ["sweep", f.sweep("name: t\ndescription: " + "[" * 5000 + "]" * 5000 + "\n"), "--dry-run"],
         (S + "line 2: nested more than 32 levels deep",)),
    Case("huge-file", "sweep file", "a 2 MB sweep file",
         lambda f: ["sweep", f.sweep("name: t\ndescription: " + "x" * 2_000_000 + "\n"), "--dry-run"],
         (S + "2000022 bytes; a sweep or pre-training file may have at most 1000000 bytes",)),
    Case("binary-sweep-file", "sweep file", "a sweep file of random bytes", binary_sweep,
         (S + "not a text file (it holds NUL bytes); expected YAML",)),
    Case("sweep-file-is-a-folder", "sweep file", "`benchxfer sweep .` (a folder)",
         lambda f: ["sweep", str(f.tmp), "--dry-run"], ("Error: Invalid value for 'FILE': File '<tmp>' is a directory. (see `benchxfer sweep --help`)",)),
    Case("pretrain-duplicate-key", "pretrain file", "a pre-training file with `arch:` twice",
         lambda f: ["pretrain", f.write("p.yaml", PRETRAIN + "arch: resnet50\n")],
         ("<tmp>/p.yaml: YAML syntax error at line 5, column 1: duplicate key 'arch' (first on line 4)",)),
    Case("pretrain-direct-with-workers", "pretrain file", "a pre-training file with `resources: {trainer: direct, workers: 2}`",
         lambda f: ["pretrain", f.write("p.yaml", PRETRAIN + "resources: {trainer: direct, workers: 2}\n")],
         ("<tmp>/p.yaml: resources: trainer 'direct' runs one process, but workers is 2",)),
    Case("pretrain-named-like-builtin", "pretrain file", "`inits: [{name: imagenet, pretrain: p.yaml}]` (a built-in name)",
         good_dry(old="inits: [scratch]", new="inits: [{name: imagenet, pretrain: p.yaml}]"),
         (S + "inits[0].name: 'imagenet' is a built-in init; what p.yaml pre-trains needs a name of its own",)),
    # CLI options and files handed over
    Case("lists-empty-name", "dataset", "`--lists train=` (no file name)",
         lambda f: ["data", "verify", "chestxray14", "--root", str(f.tmp), "--lists", "train="],
         ("Error: --lists 'train=': the file name is empty; use SPLIT=FILE",)),
    Case("lists-folder", "dataset", "`--lists train=DIR` (a folder)",
         lambda f: ["data", "verify", "chestxray14", "--root", str(f.tmp), "--lists", f"train={f.tmp}"],
         ("Error: --lists 'train=<tmp>': <tmp> is a folder; give a list file",)),
    Case("cache-zero-workers", "CLI", "`data cache --workers 0`",
         lambda f: ["data", "cache", "chestxray14", "--root", str(f.tmp), "--size", "16", "--workers", "0"],
         ("Error: Invalid value for '--workers': 0 is not in the range 1<=x<=256.",)),
    Case("synthetic-zero-size-cli", "CLI", "`data synthetic chestxray14 --size 0`",
         lambda f: ["data", "synthetic", "chestxray14", "--root", str(f.tmp / "new"), "--size", "0"],
         ("Error: Invalid value for '--size': 0 is not in the range 8<=x<=4096.",)),
    Case("not-a-checkpoint-png", "checkpoint", "`zoo import mine scan.png` (an image)", not_a_checkpoint_png,
         ("Error: <tmp>/scan.png is not a checkpoint: a PNG image (first bytes 89 50 4e 47); expected a PyTorch file",)),
    Case("not-a-checkpoint-bytes", "checkpoint", "`zoo import mine noise.pth` (random bytes)", not_a_checkpoint_bytes,
         ("Error: <tmp>/noise.pth is not a checkpoint: unknown content (first bytes 42",)),
    Case("ui-port-out-of-range", "CLI", "`ui --port 99999`", lambda f: ["ui", "--port", "99999"],
         ("Error: Invalid value for '--port': 99999 is not in the range 1<=x<=65535.",)),
    Case("ui-port-in-use", "CLI", "`ui --port N` where N is taken", port_in_use,
         ("Error: --port ", ": cannot listen on 127.0.0.1:", "it is in use, pick another port with --port")),
    Case("bad-address", "CLI", "`sweep --address 'not an address'`",
         lambda f: ["sweep", f.good(), "--address", "not an address"],
         ("Error: --address 'not an address': use 'auto', HOST:PORT", "or ray://HOST:PORT")),
    Case("address-port-out-of-range", "CLI", "`sweep --address ray://head:99999`",
         lambda f: ["sweep", f.good(), "--address", "ray://head:99999"],
         ("Error: --address 'ray://head:99999':", "with a port in 1-65535")),
    Case("negative-limit", "CLI", "`sweep --dry-run --limit -1`",
         lambda f: ["sweep", f.good(), "--dry-run", "--limit", "-1"],
         ("Error: Invalid value for '--limit': -1 is not in the range x>=0.",)),
    Case("train-set-out-of-range", "CLI", "`train --set epochs=0`",
         lambda f: ["train", f.good(), "--set", "epochs=0"], ("Error: --set: epochs must be an integer >= 1, got 0",)),
    Case("train-set-bad-augment", "CLI", "`train --set augment=banana`",
         lambda f: ["train", f.good(), "--set", "augment=banana"],
         ("Error: --set: augment must be one of bit-hyperrule, plain, supervised-pretrain, systematic-cls, "
          "systematic-seg, got 'banana'",)),
    # round two (issue 24): one validator for the dry run, the real run and --set
    Case("zero-cpus-per-worker", "sweep file", "`resources: {cpus_per_worker: 0}`",
         good_dry(add="resources: {cpus_per_worker: 0}\n"),
         (S + "resources.cpus_per_worker: must be a number in (0, 1024], got 0",)),
    Case("name-too-long", "sweep file", "a 250-character `name:`",
         good_dry(old="name: done", new="name: " + long_name(250)),
         (S + "name: must be a name of lower-case letters, digits, '.', '_' or '-' (at most 64 characters), got "
          "'aaaa", "(250 characters)")),
    Case("huge-seed", "sweep file", "`seeds: [99999999999999999999]`",
         good_dry(old="seeds: 1", new="seeds: [99999999999999999999]"),
         (S + "seeds[0]: must be an integer in [0, 4294967295], got 99999999999999999999",)),
    Case("steps-without-max-steps", "sweep file", "`overrides: {stopping: steps}` without `max_steps`",
         good_dry(old="epochs: 1", new="epochs: 1, stopping: steps"),
         (S + "datasets[0] (chestxray14): stopping 'steps' needs max_steps > 0",)),
    Case("class-balance-with-shots", "sweep file", "`overrides: {balance: class}` with `shots: [5]`",
         good_dry(old="epochs: 1", new="epochs: 1, balance: class", add="shots: [5]\n"),
         (S + "datasets[0] (chestxray14): balance 'class' oversamples full-data runs only and cannot be combined "
          "with shots",)),
    Case("uncertain-banana", "sweep file", "a dataset `options: {uncertain: banana}`",
         good_dry(old="root: synthetic", new="root: synthetic\n    options: {uncertain: banana}"),
         (S + "datasets[0].options: uncertain must be one of lsr-ones, lsr-zeros, ones, zeros, got 'banana'",)),
    Case("cache-size-zero", "sweep file", "a dataset `options: {cache_size: 0}`",
         good_dry(old="root: synthetic", new="root: synthetic\n    options: {cache_size: 0}"),
         (S + "datasets[0].options: cache_size must be an integer in [8, 4096], got 0",)),
    Case("cache-never-built", "sweep file", "a dataset `options: {cache_size: 16}` whose cache was never built",
         cache_never_built,
         (S + "datasets[0].options.cache_size: no cache of size 16 for chestxray14 at <tmp>/nih",
          "build it with `benchxfer data cache chestxray14 --root <tmp>/nih --size 16`")),
    Case("shots-larger-than-the-set", "sweep file", "`shots: [50]` on a ChestX-ray14 copy of 4 training images",
         shots_over_the_set,
         (S + "shots: 50 images per class is more than chestxray14 at <tmp>/nih has in any class (its largest holds ",
          "so the few-shot set would be the whole set; use shots <= ")),
    Case("pretrain-name-too-long", "pretrain file", "a pre-training file whose `name:` has 70 characters",
         lambda f: ["pretrain", f.write("p.yaml", PRETRAIN.replace("name: mine", "name: " + long_name(70)))],
         ("<tmp>/p.yaml: name: must be a name of lower-case letters, digits, '.', '_' or '-' (at most 64 "
          "characters)",)),
    Case("pretrain-seed-abc", "pretrain file", "a pre-training file with `seed: abc`",
         lambda f: ["pretrain", f.write("p.yaml", PRETRAIN + "seed: abc\n")],
         ("<tmp>/p.yaml: seed: must be an integer in [0, 4294967295], got 'abc'",)),
    Case("train-set-select-banana", "CLI", "`train --set select=banana`",
         lambda f: ["train", f.good(), "--set", "select=banana"],
         ("Error: --set: unknown select 'banana'; known: best-val, last",)),
    Case("train-set-bad-yaml", "CLI", "`train --set 'epochs={a: 1'`",
         lambda f: ["train", f.good(), "--set", "epochs={a: 1"],
         ("Error: --set 'epochs={a: 1': the value is not valid YAML (",)),
    # environment variables, checked once at start-up
    Case("placement-timeout-abc", "environment", "`BENCHXFER_PLACEMENT_TIMEOUT_S=abc`",
         lambda f: ["status", "done"],
         ("Error: $BENCHXFER_PLACEMENT_TIMEOUT_S='abc': not a number; allowed: a positive number of seconds",),
         env=env_var("BENCHXFER_PLACEMENT_TIMEOUT_S", "abc")),
    Case("placement-timeout-negative", "environment", "`BENCHXFER_PLACEMENT_TIMEOUT_S=-5`",
         lambda f: ["status", "done"],
         ("Error: $BENCHXFER_PLACEMENT_TIMEOUT_S='-5': not a positive number of seconds; allowed:",),
         env=env_var("BENCHXFER_PLACEMENT_TIMEOUT_S", "-5")),
    Case("cache-env-is-a-file", "environment", "`BENCHXFER_CACHE` naming a file",
         lambda f: ["status", "done"],
         ("Error: $BENCHXFER_CACHE='<tmp>/cache.txt': <tmp>/cache.txt is a file, not a folder; allowed: a writable "
          "folder",), env=cache_env_file),
    Case("home-symlink-loop", "environment", "`BENCHXFER_HOME` naming a symbolic link loop",
         lambda f: ["status", "done"],
         ("Error: $BENCHXFER_HOME='<tmp>/loop-a': <tmp>/loop-a is a symbolic link loop; give a folder",),
         env=home_symlink_loop),
    Case("tracking-uri-not-a-url", "environment", "`MLFLOW_TRACKING_URI=not-a-url`",
         lambda f: ["status", "done"],
         ("Error: $MLFLOW_TRACKING_URI='not-a-url': not a tracking URI; allowed: an MLflow tracking URI",),
         env=env_var("MLFLOW_TRACKING_URI", "not-a-url")),
    Case("tracking-uri-option-not-a-url", "CLI", "`sweep --tracking-uri not-a-url`",
         lambda f: ["sweep", f.good(), "--tracking-uri", "not-a-url"],
         ("Error: --tracking-uri 'not-a-url': not a tracking URI; allowed: an MLflow tracking URI",)),
    Case("ray-address-bad", "environment", "`RAY_ADDRESS=head` (no port)",
         lambda f: ["status", "done"],
         ("Error: $RAY_ADDRESS='head': not a Ray address; allowed: a Ray cluster: 'auto', HOST:PORT",),
         env=env_var("RAY_ADDRESS", "head")),
    # round three (issue 34): names are checked for what they stand for
    Case("home-unknown-user", "environment", "`BENCHXFER_HOME='~nosuchuser/bx'`", lambda f: ["status", "done"],
         ("Error: $BENCHXFER_HOME='~nosuchuser/bx': '~nosuchuser' names no user on this machine, so it cannot be "
          "expanded; give the folder's full path",), env=env_var("BENCHXFER_HOME", "~nosuchuser/bx")),
    Case("zoo-dangling-link", "environment", "`BENCHXFER_ZOO` under a symbolic link to nothing (a share not mounted)",
         lambda f: ["zoo", "list"],
         ("Error: $BENCHXFER_ZOO='<tmp>/share/zoo': <tmp>/share is a symbolic link to <tmp>/mnt/share, which does not "
          "exist (an unmounted share?); mount it, or give a folder",), env=home_dangling_link),
    Case("reserved-sweep-name", "sweep file", "`name: pretrain` (the pre-training runs' folder and experiment)",
         good_dry(old="name: done", new="name: pretrain"),
         (S + "name: 'pretrain' is reserved for the pre-training runs' folder (runs/pretrain) and MLflow experiment; "
          "give the sweep another name",)),
    Case("pretrain-over-import", "data loss", "`pretrain p.yaml` whose `name: mine` is an init imported into the zoo",
         pretrain_over_import,
         ("Error: <tmp>/p.yaml: name: init 'mine' is already in the zoo (sha256 ", "from <tmp>/first.pth); give the "
          "pre-trained backbone another name, or pass --force to replace it")),
    Case("report-out-over-own-files", "data loss", "`report done --out DIR`, DIR holding the user's own "
         "summary.csv, table.md and report.html", report_over_own_files,
         ("Error: report folder <tmp>/paper: 3 file(s) of the report are already there and were not written by "
          "benchxfer (or were changed since), the first: <tmp>/paper/", "nothing was replaced: give another --out, "
          "or move them away")),
    Case("sweep-file-changed", "CLI", "`sweep s.yaml` after editing epochs 1 -> 2 under the same name", sweep_file_changed,
         ("Error: sweep 'moved': <tmp>/s.yaml is not the sweep started under this name (<home>/runs/moved/sweep.yaml): "
          "overrides.epochs was 1, now 2; its trials would be mixed with the finished ones: give the file another "
          "`name:` to start another sweep, or restore it (`benchxfer resume moved` continues the sweep that was "
          "started)",)),
    Case("sweep-file-changed-dry", "CLI", "`sweep s.yaml --dry-run` after editing epochs 1 -> 2 under the same name",
         sweep_file_changed_dry,
         ("Error: sweep 'moved': <tmp>/s.yaml is not the sweep started under this name (<home>/runs/moved/sweep.yaml): "
          "overrides.epochs was 1, now 2;",)),
    Case("train-held", "CLI", "`train s.yaml` while another `train` of the same trial runs", train_held,
         ("Error: trial scratch_chestxray14_lr0.001_s0_", "of sweep 'done' is in use by `benchxfer train s.yaml` (pid ",
          "wait for it to end")),
    Case("pretrain-held", "CLI", "`pretrain p.yaml` while another `pretrain` of `mine` runs", pretrain_held,
         ("Error: pre-training 'mine' is in use by `benchxfer pretrain p.yaml` (pid ", "wait for it to end")),
    Case("resume-other-store", "CLI", "`resume moved` without the `--tracking-uri` of the team server it ran on",
         resume_other_store,
         ("Error: resume moved: the sweep records its runs in http://team.example:5000, not sqlite:///<home>/mlflow.db "
          "(its finished trials' runs are there); pass --tracking-uri http://team.example:5000, or start another sweep "
          "under another name for this store",)),
    Case("sweep-folder-symlink-loop", "CLI", "`status loopa` where runs/loopa is a symbolic link loop",
         sweep_folder_loop,
         ("Error: sweep 'loopa': <home>/runs/loopa is a symbolic link loop; restore the sweep's folder there, or "
          "remove the link",)),
    Case("tracking-uri-sqlite-folder", "CLI", "`sweep --tracking-uri sqlite:///DIR` naming a folder (answers at once)",
         sqlite_folder,
         ("Error: --tracking-uri 'sqlite:///<tmp>/dbdir': <tmp>/dbdir is a folder, not an SQLite database file (give "
          "sqlite:///FOLDER/mlflow.db); allowed: an MLflow tracking URI",)),
    Case("pretrain-is-a-checkpoint", "sweep file", "`inits: [{name: mine, pretrain: r18.pth}]` (a checkpoint, not a "
         "pre-training file)",
         lambda f: ["sweep", f.good("inits: [scratch]", f"inits: [{{name: mine, pretrain: {f.resnet18()}}}]"),
                    "--dry-run"],
         (S + "inits[0].pretrain: <tmp>/r18.pth is a checkpoint, not a pre-training file (YAML); to start from a "
          "checkpoint, import it (`benchxfer zoo import mine <tmp>/r18.pth`) and list it as `inits: [mine]`",)),
    Case("pretrain-not-a-path", "sweep file", "`inits: [{name: mine, pretrain: 5}]` (a number, not a file)",
         good_dry(old="inits: [scratch]", new="inits: [{name: mine, pretrain: 5}]"),
         (S + "inits[0].pretrain: must be the path of a pre-training file (YAML), got 5",)),
    Case("zoo-import-declared-sizes", "checkpoint", "`zoo import` of a torch zip whose records declare 64 MiB of "
         "zeros in 65 KB (deflated)", declared_sizes_bomb,
         ("Error: refused <tmp>/bomb.pth: its records declare 64 MiB (the largest, ", "64 MiB) in a file of 0.1 MiB; "
          "torch.save stores tensors uncompressed, so it was not loaded (loading would allocate that memory)",)),
    Case("zoo-import-storage-over-record", "checkpoint", "`zoo import` of a torch zip whose pickle declares a "
         "storage of 8 GiB (numel patched) while its record holds 0.5 MB", storage_over_record,
         ("Error: refused <tmp>/crafted.pth: its pickle declares storage 0 of 8,589,934,592 bytes, but its record "
          "archive/data/0 holds 493,828; it was not loaded (loading would allocate the declared size)",)),
    Case("zoo-import-storage-over-arch", "checkpoint", "`zoo import imagenet` (a resnet50 init) of that file",
         storage_over_arch,
         ("Error: refused <tmp>/crafted.pth: its tensors declare 8,192 MiB in 1 storage(s), but a resnet50 backbone "
          "holds 90 MiB of weights, and a checkpoint may hold at most 4 x that + 2 GiB (a second encoder, optimiser "
          "state, memory banks); it was not loaded",)),
    Case("zoo-import-legacy-storage-over-file", "checkpoint", "`zoo import` of a legacy (non-zip) torch.save file "
         "whose pickle declares 8 GiB in 0.5 MB", legacy_storage_over_file,
         ("Error: refused <tmp>/legacy.pth: its tensors declare 8,192.0 MiB, more than the whole file (0.5 MiB) "
          "holds; it was not loaded (loading would allocate that memory)",)),
    # damaged or foreign files, named
    Case("latin1-csv", "dataset", "a CheXpert CSV with a Latin-1 byte (`é` saved as 0xe9)", latin1_csv,
         ("<tmp>/chex/train.csv: line 3: not UTF-8 text (byte 0xe9, perhaps Latin-1 or Windows-1252); a CSV file "
          "must be UTF-8",)),
    Case("latin1-list", "dataset", "a list file with a Latin-1 byte", latin1_list,
         ("<tmp>/latin1.txt: line 1: not UTF-8 text (byte 0xe9, perhaps Latin-1 or Windows-1252); a list file "
          "must be UTF-8",)),
    Case("truncated-csv-gz", "dataset", "MIMIC-CXR's `mimic-cxr-2.0.0-chexpert.csv.gz` cut in half", truncated_csv_gz,
         ("<tmp>/mimic/mimic-cxr-2.0.0-chexpert.csv.gz: the compressed file ends early (truncated); download or copy it again",)),
    Case("utf16-sweep-file", "sweep file", "a sweep file saved as UTF-16", utf16_sweep,
         (S + "UTF-16 text; a sweep or pre-training file must be UTF-8, re-save it as UTF-8",)),
    Case("keep-unknown", "sweep file", "`keep: everything` (what a final trial's folder keeps)",
         good_dry(add="keep: everything\n"),
         (S + "keep: must be one of selected, none, checkpoint, got 'everything'",)),
    Case("micro-batch-batchnorm", "sweep file", "`micro_batch: 2` on a ResNet (a net with BatchNorm)",
         good_dry(old="epochs: 1}", new="epochs: 1, micro_batch: 2}"),
         (S + "datasets[0] (chestxray14): micro_batch 2 on a resnet18 net with BatchNorm: each micro-batch would be "
          "normalised by its own statistics and move the running statistics once per piece, so the step is not the "
          "batch's; use micro_batch 0, or a GroupNorm arch (bit-r101x1",)),
    Case("symlink-loop-sweep-file", "sweep file", "a sweep file that is a symbolic link loop", symlink_loop_sweep,
         (S + "a symbolic link loop, not a YAML file",)),
    Case("resume-copy-deleted", "CLI", "`resume tiny` after runs/tiny/sweep.yaml was deleted", resume_without_copy,
         ("Error: sweep 'tiny' in <home>/runs/tiny is damaged: <home>/runs/tiny/sweep.yaml (the sweep file as it "
          "was started) is missing; restore it, or start the sweep again with `benchxfer sweep <tmp>/s.yaml`",)),
    Case("zoo-import-nan", "checkpoint", "`zoo import` of a checkpoint whose every weight is NaN", nan_checkpoint,
         ("Error: <tmp>/nan.pth: ", "tensors hold non-finite values (NaN or inf), the first: ",
          "refusing to import it")),
    Case("zoo-import-read-only", "checkpoint", "`zoo import` into a zoo folder that cannot be written", read_only_zoo,
         ("Error: zoo folder <tmp>/zoo",)),
    Case("sweep-held", "CLI", "`sweep s.yaml` while another command runs sweep `done`", sweep_held,
         ("Error: sweep 'done' is in use by `benchxfer resume done` (pid ", "since ", "wait for it to end")),
]


# --- a finished trial that no failure may touch ----------------------------------------------------------

def plant_finished_sweep(home: Path) -> Path:
    """``done``: one finished trial with its result.json, checkpoint and trials.json, dated in the past."""
    sweep = home / "runs" / "done"
    trial = sweep / "trials" / "k1"
    (trial / "checkpoints").mkdir(parents=True)
    rec = result_record("done", "k1", "scratch", "chestxray14", 0, 0.75, task="multilabel")
    (trial / "result.json").write_text(json.dumps(rec))
    (trial / "checkpoints" / "epoch_0001.pt").write_bytes(b"\x80\x02best weights")
    (sweep / "trials.json").write_text(json.dumps([{k: rec[k] for k in ("trial_key", "init", "dataset", "recipe",
                                                                         "lr", "seed", "shot")}]))
    for path in sweep.rglob("*"):
        os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    return sweep


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def check_case(case: Case, run, tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    done = plant_finished_sweep(home)
    before = snapshot(done)
    env = {**os.environ, "BENCHXFER_HOME": str(home)}
    for var in ("MLFLOW_TRACKING_URI", "BENCHXFER_ZOO"):
        env.pop(var, None)
    for var, value in (case.env(work, home) if case.env else {}).items():
        if value is None:
            env.pop(var, None)
        else:
            env[var] = value

    files = Files(work)
    try:
        code, out, err = run(case.args(files), env, work)
    finally:
        for undo in files.cleanups:
            undo()

    assert code != 0 and code != "timeout", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert "Traceback" not in err and line.startswith("Error: "), err
    for want in case.expect:
        want = want.replace("<tmp>", str(work)).replace("<home>", str(home))
        assert want in line, f"{want!r} not in {line!r}"
    assert snapshot(done) == before, "the finished trial of sweep 'done' was changed"
    for folder, files_before in files.kept.items():
        assert snapshot(Path(folder)) == files_before, f"{folder} was changed"
    assert not (work / "pwned").exists(), "a checkpoint ran code while it was read"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.fast
def test_bad_input_is_one_line(case: Case, tmp_path):
    check_case(case, cold_run if COLD else warm_run, tmp_path)


@pytest.mark.parametrize("case", [c for c in CASES if c.id in COLD_CASES], ids=COLD_CASES)
@pytest.mark.fast
def test_bad_input_is_one_line_in_a_real_process(case: Case, tmp_path):
    check_case(case, cold_run, tmp_path)


@pytest.mark.fast
def test_the_table_in_docs_lists_every_case():
    """docs/errors.md has one row per case, naming its test id."""
    doc = (Path(__file__).parents[1] / "docs" / "errors.md").read_text()
    for case in CASES:
        assert f"test_bad_input_is_one_line[{case.id}]" in doc, case.id


# --- the one-line rule is structural: any other exception is one line and a log -----------------------------

def _with_boom(monkeypatch) -> None:
    """A command whose code has a bug (it divides by zero), registered like every other command."""
    import benchxfer.cli

    monkeypatch.setitem(benchxfer.cli.COMMANDS, "boom", "test_errors:boom")


def _boom_command():
    import click

    @click.command()
    def boom_cmd() -> None:
        """Fails with a bug."""
        print(1 / 0)

    return boom_cmd


boom = _boom_command()


@pytest.mark.fast
def test_unexpected_error_is_one_line_naming_the_command_and_a_log(monkeypatch, tmp_path):
    _with_boom(monkeypatch)
    home = tmp_path / "home"
    code, out, err = warm_run(["boom"], {"BENCHXFER_HOME": str(home), "PATH": os.environ["PATH"]}, tmp_path)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert line.startswith("Error: `benchxfer boom` failed unexpectedly (ZeroDivisionError: division by zero); "
                           f"the traceback is in {home / 'logs'}/"), line
    assert "rerun with `benchxfer --debug` to see it here" in line
    log = Path(re.search(r"the traceback is in (\S+\.log)", line).group(1))
    text = log.read_text()
    assert text.startswith("benchxfer boom\nTraceback") and "1 / 0" in text and "ZeroDivisionError" in text


@pytest.mark.fast
def test_debug_shows_the_traceback(monkeypatch, tmp_path):
    _with_boom(monkeypatch)
    code, out, err = warm_run(["--debug", "boom"], {"BENCHXFER_HOME": str(tmp_path), "PATH": os.environ["PATH"]},
                              tmp_path)
    assert code == 1 and "Traceback" in err and "ZeroDivisionError: division by zero" in err
    assert not (tmp_path / "logs").exists()


@pytest.mark.fast
def test_usage_errors_keep_clicks_line(tmp_path):
    code, out, err = warm_run(["status"], {"BENCHXFER_HOME": str(tmp_path)}, tmp_path)
    assert code == 2 and err.strip() == "Error: Missing argument 'NAME'. (see `benchxfer status --help`)"


@pytest.mark.fast
def test_a_relative_home_is_made_absolute_once(tmp_path):
    """`BENCHXFER_HOME=relhome` means the folder relhome in the current folder, for every process after."""
    code, out, err = warm_run(["status", "ghost"], {"BENCHXFER_HOME": "relhome"}, tmp_path)
    assert code == 1 and err.strip().startswith(f"Error: no sweep named 'ghost' in {tmp_path / 'relhome' / 'runs'} "), err


# --- what used to be refused and is fine: 1e-3, a byte-order mark ---------------------------------------------

@pytest.mark.fast
def test_lr_written_1e_3_is_a_number(tmp_path):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; sweep files read it as the number 0.001, everywhere."""
    from benchxfer.plan.spec import load_spec

    f = Files(tmp_path)
    assert load_spec(f.good("[0.001, 0.0001]", "[1e-3, 1E-4]")).lr == (0.001, 0.0001)
    spec = load_spec(f.good("[0.001, 0.0001]", "{search: loguniform, low: 1e-4, high: 1e-1, trials: 2}",
                            add="mode: tune-then-repeat\n"))
    assert (spec.lr.low, spec.lr.high) == (1e-4, 1e-1)
    spec = load_spec(f.good("epochs: 1", "epochs: 1, weight_decay: 5e-4"))
    assert spec.overrides["weight_decay"] == 5e-4
    code, out, err = warm_run(["sweep", f.good("[0.001, 0.0001]", "[1e-3]"), "--dry-run"],
                              {"BENCHXFER_HOME": str(tmp_path / "home")}, tmp_path)
    assert code == 0 and "lr0.001" in out, err


@pytest.mark.fast
def test_a_byte_order_mark_is_dropped(tmp_path):
    """A sweep file, a list file and a CSV saved with a BOM (as Windows editors do) read like the plain ones."""
    f = Files(tmp_path)
    env = {"BENCHXFER_HOME": str(tmp_path / "home")}
    sweep = tmp_path / "bom.yaml"
    sweep.write_text("\ufeff" + GOOD, encoding="utf-8")
    code, out, err = warm_run(["sweep", str(sweep), "--dry-run"], env, tmp_path)
    assert code == 0, err
    root = f.nih()
    listing = tmp_path / "bom.txt"
    listing.write_text("\ufeff" + (root / "Xray14_train_official.txt").read_text(), encoding="utf-8")
    code, out, err = warm_run(["data", "verify", "chestxray14", "--root", str(root), "--lists", f"train={listing}",
                               "--no-decode"], env, tmp_path)
    assert code == 0, err
    chex = synthetic.write("chexpert", tmp_path / "chex", **SMALL)
    csvs = sorted(chex.rglob("*.csv"))
    assert csvs
    for path in csvs:
        path.write_text("\ufeff" + path.read_text(), encoding="utf-8")
    code, out, err = warm_run(["data", "verify", "chexpert", "--root", str(chex), "--no-decode"], env, tmp_path)
    assert code == 0, err


# --- damaged state is named, never shown as a state ------------------------------------------------------------

@pytest.mark.fast
def test_status_and_report_name_a_damaged_result(tmp_path):
    """A result.json whose value is a string: `status` shows the trial as damaged with the file and what is wrong
    (not as interrupted or pending); `report` skips it, names it, and reports the others."""
    home = tmp_path / "home"
    sweep = plant_finished_sweep(home)
    rec = {**json.loads((sweep / "trials" / "k1" / "result.json").read_text()), "epochs_started": 1,
           "best_val_loss": 0.5}  # a whole record, as a trial writes it
    (sweep / "trials" / "k1" / "result.json").write_text(json.dumps(rec))
    (sweep / "trials" / "k2").mkdir()
    bad = sweep / "trials" / "k2" / "result.json"
    bad.write_text(json.dumps({**rec, "trial_key": "k2", "seed": 1, "value": "high"}))
    trials = json.loads((sweep / "trials.json").read_text())
    (sweep / "trials.json").write_text(json.dumps([*trials, {**trials[0], "trial_key": "k2", "seed": 1}]))
    env = {"BENCHXFER_HOME": str(home)}
    code, out, err = warm_run(["status", "done"], env, tmp_path)
    assert code == 1 and err.strip() == (f"Error: sweep 'done': 1 damaged trial(s), the first: k2 (damaged: {bad}: "
                                         "value='high' is not a number); restore or remove the file, then "
                                         "`benchxfer resume done`"), err
    row = next(line for line in out.splitlines() if line.startswith("k2 "))
    assert row.split()[1] == "damaged" and f"damaged: {bad}: value='high' is not a number" in row, row
    assert "1 finished" in out and "1 damaged" in out, out
    code, out, err = warm_run(["report", "done", "--out", str(tmp_path / "rep")], env, tmp_path)
    assert code == 0 and "Traceback" not in err, err
    assert f"Skipped a damaged trial: {bad}: value='high' is not a number" in out, out

"""Offline nodes: importing every benchxfer module makes no network attempt (no name lookup, no connect).

Each check runs in a fresh interpreter whose audit hook records and refuses ``socket.getaddrinfo``,
``socket.connect`` and friends, then prints what was attempted."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.fast

PROBE = textwrap.dedent('''
    import json, sys, threading, time

    attempts = []
    WATCHED = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex",
               "socket.gethostbyaddr", "socket.sendto"}

    def hook(event, args):
        if event in WATCHED:
            attempts.append([event, repr(args)[:200]])
            raise OSError("network refused by the offline test")

    sys.addaudithook(hook)
    import importlib, pkgutil
    names = sys.argv[1:] if sys.argv[1:2] != ["--train"] else ["benchxfer"]
    if names == ["benchxfer"]:
        import benchxfer
        names = ["benchxfer"] + [m.name for m in pkgutil.walk_packages(benchxfer.__path__, "benchxfer.")]
    for name in names:
        importlib.import_module(name)
    if len(sys.argv) > 1 and sys.argv[1] == "--train":  # run time: a classification and a segmentation trial
        import torch
        from benchxfer import data
        from benchxfer.recipes import TrainConfig, get_recipe
        from benchxfer.train.loop import train_run
        from benchxfer.train.session import Runtime
        torch.set_num_threads(1)
        work = sys.argv[2]
        for recipe, dataset, arch in (("bit-hyperrule", "cifar10", "resnet18"), ("systematic-seg", "montgomery-lungs", "resnet18")):
            root = data.synthetic.write(dataset, f"{work}/{dataset}", n_train=8, n_val=4, n_test=4, size=32, seed=1)
            knobs = get_recipe(recipe).resolve({"arch": arch, "size": 32, "batch_size": 4, "epochs": 1, "max_steps": 1,
                                                "loader_workers": 0}, "offline")
            cfg = TrainConfig.from_dict({**knobs, "trial_key": dataset, "dataset": dataset, "root": str(root),
                                         "lr": 1e-3, "seed": 0})
            train_run(cfg, Runtime(trial_dir=f"{work}/trial-{dataset}"))
        names.append("train")
    deadline = time.monotonic() + 3  # a check started in a thread at import has time to try
    while time.monotonic() < deadline and any(t.is_alive() for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon):
        time.sleep(0.1)
    time.sleep(0.5)
    print("ATTEMPTS " + json.dumps({"modules": len(names), "attempts": attempts}))
''')


def probe(*modules: str, env: dict[str, str] | None = None) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"} | (env or {})
    out = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, env=environ,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("ATTEMPTS "))
    return json.loads(line.removeprefix("ATTEMPTS "))


def test_the_probe_sees_a_network_attempt():
    """albumentations imported on its own (not through benchxfer) asks for its latest version: the probe catches it."""
    seen = probe("albumentations")
    assert seen["attempts"], "the audit hook saw no attempt: the offline test could not fail"


def test_importing_every_benchxfer_module_and_running_a_trial_make_no_network_attempt(tmp_path):
    """Import time, every module of the package, then run time: a few-shot classification trial and a U-Net
    segmentation trial (no MLflow, no Ray), in one interpreter (each costs the imports of torch and the rest)."""
    seen = probe("--train", str(tmp_path))
    assert seen["modules"] > 60  # every module of the package, models, transforms, tracking, sweep, cli ... and train
    assert seen["attempts"] == []
    assert (tmp_path / "trial-cifar10" / "result.json").exists() and (tmp_path / "trial-montgomery-lungs" / "result.json").exists()

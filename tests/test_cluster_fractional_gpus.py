"""Several trials per GPU: ``gpus_per_worker: 0.25`` on a Ray session that declares one GPU (this machine has none;
Ray hands out what a node declares). Through benchxfer's own Tune launch (``sweep.run_trials``), four trials
must run at the same time, and each must see exactly one device (``ray.get_gpu_ids()``, ``CUDA_VISIBLE_DEVICES``).
The GPU pre-flight reads the node's ``accelerator_type`` from the live session and refuses a packing that cannot fit.

This module owns Ray while it runs (as test_cluster_multinode.py): it ends the shared local session first and
starts a fresh one at the end for the modules that follow. Run it under the Ray lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchxfer.errors import BenchxferError
from benchxfer.launch import cluster
from benchxfer.launch.sweep import Launch, run_trials
from benchxfer.recipes import TrainConfig
from benchxfer.trial import Trial

pytestmark = pytest.mark.e2e
OWNS_RAY = True  # conftest.py runs this module before the shared session starts


@pytest.fixture(scope="module")
def one_gpu_session(bx_home):
    import ray

    from benchxfer.launch.sweep import ensure_ray

    was_up = ray.is_initialized()
    ray.shutdown()
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        os.environ.pop(k, None)
    ray.init(address="local", num_cpus=4, num_gpus=1, resources={"accelerator_type:A10G": 1},
             include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        os.environ.pop(k, None)
    if was_up:
        ensure_ray()


def test_four_trials_share_one_gpu_each_seeing_one_device(one_gpu_session, tmp_path):
    folder = tmp_path / "seen"
    folder.mkdir()

    def trainable(config, shared):  # a closure: Ray pickles it by value
        import time

        import ray as r

        key = shared.trial(config).key
        (folder / f"{key}.started").write_text("")
        deadline = time.time() + 120
        while len(list(folder.glob("*.started"))) < 4 and time.time() < deadline:
            time.sleep(0.2)
        together = len(list(folder.glob("*.started")))
        (folder / f"{key}.json").write_text(json.dumps({
            "together": together, "gpu_ids": [str(g) for g in r.get_gpu_ids()],
            "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}))

    trials = [Trial(f"frac{i}", "scratch", "synthetic", "systematic-cls", 1e-3, i, None, "multiclass", "accuracy",
                    {}, TrainConfig()) for i in range(4)]
    launch = Launch(sweep="fractional", tracking_uri="", cpus_per_worker=1, gpus_per_worker=0.25)
    assert cluster.max_trials(launch, 4) == 4  # 1 GPU / 0.25
    run_trials(trials, launch, trainable=trainable, echo=lambda _: None)
    seen = {p.stem: json.loads(p.read_text()) for p in Path(folder).glob("*.json")}
    assert sorted(seen) == [t.key for t in trials]
    for key, s in seen.items():
        assert s["together"] == 4, (key, s)  # no trial finished before all four had started
        assert s["gpu_ids"] == ["0"] and s["cuda_visible"] == "0", (key, s)  # one device, the declared GPU


def test_gpu_preflight_reads_the_accelerator_type_of_the_live_nodes(one_gpu_session):
    found, _ = cluster.shapes()
    assert [cluster.gpu_types(s) for s in found] == [["A10G"]]
    quarter = Launch(sweep="fractional", tracking_uri="", cpus_per_worker=1, gpus_per_worker=0.25)
    resnet = TrainConfig(arch="resnet50", size=224, batch_size=32, micro_batch=0)
    cluster.gpu_preflight(quarter, [(resnet, "multiclass")])  # 4 x 2.0 GB on an A10G (22.5 GiB)
    bit = TrainConfig(arch="bit-r50x1", size=480, batch_size=32, micro_batch=0)
    with pytest.raises(BenchxferError, match=r"packs 4 trials on one GPU.*4 need 54\.8 GB.*A10G 22\.5 GB"):
        cluster.gpu_preflight(quarter, [(bit, "multiclass")])

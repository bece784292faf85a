"""GPU memory: the measured table, the estimate per trial, the pre-flight refusal by GPU type and by packing, the
dry run's columns, and fractional ``gpus_per_worker`` in sweep files. No Ray: the node types are read from
cluster.yaml as the autoscaler states them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_cluster_and_sweeps import SWEEPS, dry_run, init_names, local_copy, make_zoo

from benchxfer import gpu_memory as gm
from benchxfer.errors import BenchxferError
from benchxfer.launch import cluster
from benchxfer.launch.sweep import Launch
from benchxfer.plan.spec import load_spec
from benchxfer.recipes import TrainConfig

pytestmark = pytest.mark.fast

REPO = Path(__file__).resolve().parents[1]
R152 = {4: 25.1, 8: 39.5, 16: 68.5, 32: 126.4}  # issue 22: H200, 480 px, SGD-Nesterov, bf16


def node_types() -> list[cluster.Shape]:
    """cluster.yaml's GPU node types, as `cluster.shapes()` reads an autoscaler's config."""
    doc = yaml.safe_load((REPO / "cluster.yaml").read_text())
    return [cluster.Shape(name, {k: float(v) for k, v in (t.get("resources") or {}).items()}, int(t["max_workers"]))
            for name, t in doc["available_node_types"].items() if name != doc["head_node_type"]]


def launch(**kw) -> Launch:
    return Launch(sweep="s", tracking_uri="", **{"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1, **kw})


def knobs(arch: str, size: int, batch: int, micro: int = 0) -> TrainConfig:
    return TrainConfig(arch=arch, size=size, batch_size=batch, micro_batch=micro)


# --- the estimate -----------------------------------------------------------------------------------

def test_measured_points_are_returned_as_measured():
    for images, gb in R152.items():
        assert gm.estimate("bit-r152x4", 480, images) == gm.Estimate(gb, "measured")
    assert gm.estimate("bit-r50x1", 480, 32).gb == 13.7 and gm.estimate("resnet50", 224, 32).gb == 2.0


def test_other_micro_batches_and_sizes_are_extrapolated_and_say_so():
    slope, fixed = np.polyfit(list(R152), list(R152.values()), 1)  # least squares over the four points
    est = gm.estimate("bit-r152x4", 480, 2)
    assert est.gb == pytest.approx(fixed + 2 * slope) and est.basis.startswith("extrapolated: linear in images")
    assert fixed == pytest.approx(936.5e6 * 12 / 1e9, rel=0.1)  # weights + grads + momentum, fp32
    small = gm.estimate("bit-r152x4", 240, 32)  # a quarter of the pixels: a quarter of the per-image part
    assert small.gb == pytest.approx(fixed + 32 * slope / 4) and "(240/480)^2" in small.basis
    one_point = gm.estimate("bit-r50x1", 480, 4)  # one measured point: fixed part from the parameter count
    fixed50 = 25.5e6 * 12 / 1e9
    assert one_point.gb == pytest.approx(fixed50 + (13.7 - fixed50) / 32 * 4)
    assert gm.estimate("resnet18", 224, 32) is None  # not measured: no estimate


def test_micro_batch_of_a_worker():
    assert knobs("bit-r152x4", 480, 128, 4).images_per_pass(workers=4) == 4
    assert knobs("bit-r152x4", 480, 128, 0).images_per_pass(workers=4) == 32
    assert knobs("bit-r152x4", 128, 128, 64).images_per_pass(workers=4) == 32  # larger than the worker's batch
    assert knobs("bit-r152x4", 128, 2, 0).images_per_pass(workers=4) == 1  # a worker gets at least one image
    assert gm.sharing(0.25) == 4 and gm.sharing(0.5) == 2 and gm.sharing(0.3) == 3 and gm.sharing(1) == 1


# --- the pre-flight -------------------------------------------------------------------------------------

def test_cluster_yaml_states_each_gpu_type():
    assert {s.name: cluster.gpu_types(s) for s in node_types()} == {"worker.gpu-a10g": ["A10G"],
                                                                    "worker.gpu-a100": ["A100"]}


def test_r152x4_fits_the_a100_only_in_micro_batches_of_4():
    found = node_types()
    four = launch(workers=4)
    cluster.gpu_preflight(four, [(knobs("bit-r152x4", 480, 128, 4), "multiclass")], found)
    with pytest.raises(BenchxferError) as err:
        cluster.gpu_preflight(four, [(knobs("bit-r152x4", 480, 128, 8), "multiclass")], found)
    msg = str(err.value)
    assert msg.startswith("resources: a trial of bit-r152x4 at 480 px, 8 images per micro-batch, needs an "
                          "estimated 39.5 GB per GPU (measured)") and "A10G 22.5 GB, A100 40 GB" in msg
    assert "\n" not in msg and "micro_batch" in msg


def test_a_packing_that_cannot_fit_is_refused():
    found = node_types()
    cluster.gpu_preflight(launch(gpus_per_worker=0.5), [(knobs("resnet50", 224, 32), "multiclass")], found)
    cluster.gpu_preflight(launch(gpus_per_worker=0.5), [(knobs("bit-r50x1", 480, 32), "multiclass")], found)  # 27.4
    with pytest.raises(BenchxferError, match=r"packs 4 trials on one GPU.*4 need 54\.8 GB"):
        cluster.gpu_preflight(launch(gpus_per_worker=0.25), [(knobs("bit-r50x1", 480, 32), "multiclass")], found)


def test_no_refusal_where_ray_does_not_say_the_type_or_nothing_was_measured():
    big = [(knobs("bit-r152x4", 480, 32), "multiclass")]
    untyped = [cluster.Shape("n", {"CPU": 8, "GPU": 1}, 1)]
    cluster.gpu_preflight(launch(), big, untyped)
    unknown = [cluster.Shape("n", {"CPU": 8, "GPU": 1, "accelerator_type:XYZ": 1}, 1)]
    cluster.gpu_preflight(launch(), big, unknown)
    cluster.gpu_preflight(launch(), [(knobs("resnet18", 224, 4096), "multiclass")], node_types())
    cluster.gpu_preflight(launch(), [(knobs("resnet50", 512, 4096), "segmentation")], node_types())  # U-Net
    cluster.gpu_preflight(launch(gpus_per_worker=0), big, node_types())  # a CPU sweep


# --- sweep files and the dry run ------------------------------------------------------------------------

def test_fractional_gpus_in_a_sweep_file(tmp_path):
    def spec(resources: str) -> Path:
        path = tmp_path / "s.yaml"
        path.write_text(f"name: s\ninits: [scratch]\ndatasets: [{{name: chestxray14, root: synthetic}}]\n"
                        f"resources: {resources}\n")
        return path

    assert load_spec(str(spec("{gpus_per_worker: 0.25}"))).resources.gpus_per_worker == 0.25
    with pytest.raises(BenchxferError, match=r"resources.gpus_per_worker: must be a fraction of one GPU .* got 1.5$"):
        load_spec(str(spec("{gpus_per_worker: 1.5}")))
    with pytest.raises(BenchxferError, match=r"resources: gpus_per_worker 0.5 shares a GPU .* workers is 2"):
        load_spec(str(spec("{gpus_per_worker: 0.5, workers: 2}")))


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if re.match(r"^\s+\d+\s", line)]


def test_dry_run_shows_micro_batch_memory_and_sharing(tmp_path, bx_home):
    path, doc = local_copy(SWEEPS / "fewshot_bit.yaml", tmp_path / "bit")
    out = dry_run(path, make_zoo(tmp_path / "bit" / "zoo", init_names(doc)), "--limit", "0")
    assert out.exit_code == 0, out.output
    cols = {(r[3], r[5], r[6], r[7], r[8]) for r in rows(out.output)}  # arch, micro, GB, "GB", per GPU
    assert cols == {("bit-r152x4", "4", "25.1", "GB", "1"), ("bit-r50x1", "4", "2.0", "GB*", "1")}
    assert "* extrapolated from the measured peaks" in out.output

    path, doc = local_copy(SWEEPS / "systematic_cls.yaml", tmp_path / "cls")
    out = dry_run(path, make_zoo(tmp_path / "cls" / "zoo", init_names(doc)), "--limit", "3")
    assert out.exit_code == 0, out.output
    assert {(r[5], r[6], r[8]) for r in rows(out.output)} == {("32", "2.0", "2")}  # measured; 2 trials per GPU

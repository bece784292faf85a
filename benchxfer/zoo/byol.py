"""BYOL's Haiku checkpoint (``pretrain_res50x1.pkl``) -> a torchvision ResNet-50 backbone.

The file is a (dill) pickle of ``{"step", "rng", "experiment_state"}``; ``experiment_state`` is BYOL's
``_ByolExperimentState(online_params, target_params, online_state, target_state, opt_state)``. Params
and state are Haiku mappings ``{"res_net50/~/block_group_0/~/block_0/~/conv_0": {"w": HWIO array}}``.
The backbone is the online network: conv kernels go from HWIO to OIHW, BatchNorm ``scale``/``offset``
become ``weight``/``bias``, and the running statistics come from the EMA state (``mean_ema`` and
``var_ema`` ``average``). Projector, predictor and classifier are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from benchxfer.errors import BenchxferError
from benchxfer.zoo.checkpoint import Opaque

_TORSO = re.compile(r"^res_net\d+/~/")
_BLOCK = re.compile(r"^block_group_(\d+)/~/block_(\d+)/~/(conv_(\d)|batchnorm_(\d)|shortcut_conv|shortcut_batchnorm)$")


def _module_name(haiku_name: str) -> str | None:
    """torchvision module name for a Haiku module inside the ResNet torso, None for anything else."""
    if not _TORSO.match(haiku_name):
        return None
    rest = _TORSO.sub("", haiku_name)
    if rest == "initial_conv":
        return "conv1"
    if rest == "initial_batchnorm":
        return "bn1"
    m = _BLOCK.match(rest)
    if not m:
        return None  # logits and anything else outside the backbone
    group, block, layer = int(m.group(1)), int(m.group(2)), m.group(3)
    prefix = f"layer{group + 1}.{block}."
    if m.group(4) is not None:
        return prefix + f"conv{int(m.group(4)) + 1}"
    if m.group(5) is not None:
        return prefix + f"bn{int(m.group(5)) + 1}"
    return prefix + ("downsample.0" if layer == "shortcut_conv" else "downsample.1")


def _mapping(obj: Any) -> dict[str, Any]:
    """A plain dict from a Haiku mapping, whether it unpickled as a dict or as a stand-in object."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, Opaque):
        for part in (obj.state, *obj.args):
            if isinstance(part, (Mapping, Opaque)):
                found = _mapping(part)
                if found:
                    return found
    return {}


def _online_parts(checkpoint: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(checkpoint, Mapping) or "experiment_state" not in checkpoint:
        raise BenchxferError("not a BYOL checkpoint: no 'experiment_state' at top level")
    es = checkpoint["experiment_state"]
    if hasattr(es, "online_params") and hasattr(es, "online_state"):
        return _mapping(es.online_params), _mapping(es.online_state)
    args = getattr(es, "args", None)
    if isinstance(es, Opaque) and args and len(args) == 5:  # field order of _ByolExperimentState
        return _mapping(args[0]), _mapping(args[2])
    raise BenchxferError("not a BYOL checkpoint: 'experiment_state' has no online_params/online_state")


def _tensor(array: Any, conv: bool) -> torch.Tensor:
    value = torch.from_numpy(np.array(array, copy=True))
    if conv:
        if value.ndim != 4:
            raise BenchxferError(f"BYOL conv kernel has shape {tuple(value.shape)}; expected HWIO (4 dims)")
        return value.permute(3, 2, 0, 1).contiguous()
    return value.reshape(-1)


def byol_to_torchvision(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Convert an unpickled BYOL checkpoint into torchvision ResNet names."""
    params, state = _online_parts(checkpoint)
    out: dict[str, torch.Tensor] = {}
    for name, leaves in params.items():
        module = _module_name(name)
        if module is None:
            continue
        leaves = _mapping(leaves)
        if "w" in leaves:
            out[f"{module}.weight"] = _tensor(leaves["w"], conv=True)
        if "scale" in leaves:
            out[f"{module}.weight"] = _tensor(leaves["scale"], conv=False)
        if "offset" in leaves:
            out[f"{module}.bias"] = _tensor(leaves["offset"], conv=False)
    for name, leaves in state.items():
        base, _, stat = name.rpartition("/~/")
        module = _module_name(base)
        if module is None or stat not in ("mean_ema", "var_ema"):
            continue
        leaves = _mapping(leaves)
        key = "running_mean" if stat == "mean_ema" else "running_var"
        out[f"{module}.{key}"] = _tensor(leaves["average"], conv=False)
        if "counter" in leaves and stat == "mean_ema":
            out[f"{module}.num_batches_tracked"] = torch.tensor(int(np.asarray(leaves["counter"])))
    if not out:
        raise BenchxferError("not a BYOL checkpoint: no res_net*/~/ parameters in online_params")
    return out

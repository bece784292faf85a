"""BiT (big_transfer PyTorch) key names -> timm ``resnetv2_*_bit`` key names.

big_transfer's ``ResNetV2`` names its tensors ``root.conv``, ``body.block{i}.unit{jj}.{gn1,conv1,gn2,conv2,
gn3,conv3,downsample}``, ``head.gn`` and ``head.conv`` (the classifier, a 1x1 conv). timm names the same
tensors ``stem.conv``, ``stages.{i-1}.blocks.{j-1}.{norm1,conv1,...,downsample.conv}``, ``norm`` and
``head.fc``. The second study's ``model.pth.tar`` files keep the big_transfer names under key ``model``.
"""

from __future__ import annotations

import re

import torch

_UNIT = re.compile(r"^body\.block(\d+)\.unit(\d+)\.(gn[123]|conv[123]|downsample)\.(weight|bias)$")
_FIXED = {
    "root.conv.weight": "stem.conv.weight",
    "head.gn.weight": "norm.weight",
    "head.gn.bias": "norm.bias",
    # some re-implementations call the final GroupNorm "before_head"
    "before_head.gn.weight": "norm.weight",
    "before_head.gn.bias": "norm.bias",
}
HEAD_PREFIX = "head.conv."  # the pre-training classifier; dropped


def bit_to_timm_key(key: str) -> str | None:
    """The timm name of a big_transfer key, or None if ``key`` is not a BiT backbone key."""
    if key in _FIXED:
        return _FIXED[key]
    m = _UNIT.match(key)
    if not m:
        return None
    block, unit, layer, kind = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if block < 1 or unit < 1:
        return None
    if layer.startswith("gn"):
        layer = "norm" + layer[2:]
    elif layer == "downsample":
        layer = "downsample.conv"
    return f"stages.{block - 1}.blocks.{unit - 1}.{layer}.{kind}"


def bit_to_timm(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a big_transfer state dict (head already dropped); also return the keys that did not map."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        new = bit_to_timm_key(key)
        if new is None or new in out:
            unknown.append(key)
        else:
            out[new] = value
    return out, unknown

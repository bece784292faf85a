"""Checkpoints in published layouts, written from a model's own state dict (tests of the zoo and of the sweeps)."""

from __future__ import annotations

import torch


def timm_to_bit_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write a timm ResNetV2 state dict the way big_transfer's PyTorch model names it."""
    out = {}
    for key, value in sd.items():
        if key.startswith("head.fc."):
            continue
        if key == "stem.conv.weight":
            out["root.conv.weight"] = value
        elif key.startswith("norm."):
            out["head.gn." + key.split(".", 1)[1]] = value
        else:
            _, stage, _, block, *layer = key.split(".")
            name = ".".join(layer).replace("norm", "gn").replace("downsample.conv", "downsample")
            out[f"body.block{int(stage) + 1}.unit{int(block) + 1:02d}.{name}"] = value
    out["head.conv.weight"] = torch.randn(21, sd["norm.weight"].shape[0], 1, 1)
    out["head.conv.bias"] = torch.randn(21)
    return out

"""What a backbone of each architecture looks like, and how to put one into a model.

A backbone is a ``dict[str, Tensor]`` in the target architecture's own key names: torchvision ResNet
names without ``fc.*``, or timm ResNetV2 (BiT) names without ``head.fc.*``. The expected keys and
shapes of each architecture come from building it on the ``meta`` device (no memory, no init cost).
``num_batches_tracked`` buffers are optional: old checkpoints lack them and they do not affect the
network's output.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from benchxfer.errors import BenchxferError
from benchxfer.models import ARCHS, backbone_of, build_classifier

HEAD_PREFIXES = ("fc.", "head.fc.")  # classifier heads of torchvision ResNet and timm ResNetV2
OPTIONAL_SUFFIX = "num_batches_tracked"


def is_head_key(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


@lru_cache(maxsize=None)
def backbone_spec(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``arch``'s backbone (its classifier without the head)."""
    ARCHS.get(arch)  # unknown arch -> BenchxferError listing the known ones
    with torch.device("meta"):
        model = build_classifier(arch, 1)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not is_head_key(k)}


@lru_cache(maxsize=None)
def weight_bytes(arch: str) -> int:
    """Bytes of ``arch``'s classifier's parameters and buffers (one class), counted on the meta device."""
    ARCHS.get(arch)
    with torch.device("meta"):
        model = build_classifier(arch, 1)
    return sum(v.numel() * v.element_size() for v in model.state_dict().values())


def family_archs(family: str) -> list[str]:
    return [name for name, cfg in ARCHS.items() if cfg.family == family]


def _examples(keys: list[str], n: int = 2) -> str:
    head = ", ".join(keys[:n])
    return head + (", ..." if len(keys) > n else "")


def compare(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]) -> str | None:
    """None if ``state`` fits ``expected`` exactly, else a short description of what is wrong."""
    missing = sorted(k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX))
    unexpected = sorted(k for k in state if k not in expected)
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {expected[k]}"
        for k in state
        if k in expected and tuple(state[k].shape) != expected[k]
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_examples(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_examples(shapes, 1)})")
    return "; ".join(problems) or None


def match_arch(state: dict[str, torch.Tensor], family: str | None = None) -> str | None:
    """The architecture whose backbone ``state`` is exactly, or None."""
    names = family_archs(family) if family else ARCHS.names()
    for name in names:
        if compare(state, backbone_spec(name)) is None:
            return name
    return None


def check_backbone(state: dict[str, torch.Tensor], arch: str | None, family: str | None, what: str) -> str:
    """Return the arch ``state`` is a backbone of; raise a one-line error naming ``what`` otherwise."""
    if arch is not None:
        problem = compare(state, backbone_spec(arch))
        if problem is None:
            return arch
        found = match_arch(state, family or ARCHS.get(arch).family)
        if found is not None:
            raise BenchxferError(f"{what} holds a {found} backbone, but {arch} was expected")
        raise BenchxferError(f"{what} is not a {arch} backbone: {problem}")
    found = match_arch(state, family)
    if found is not None:
        return found
    names = family_archs(family) if family else ARCHS.names()
    closest = max(names, key=lambda n: len(set(state) & set(backbone_spec(n))))
    raise BenchxferError(
        f"{what} matches no known architecture ({', '.join(names)}); "
        f"against {closest}: {compare(state, backbone_spec(closest))}"
    )


def apply_backbone(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy ``state`` into ``model``'s backbone; return the loaded keys, sorted.

    ``model`` is a torchvision ResNet or timm ResNetV2 classifier (everything but the head is filled),
    or a segmentation_models_pytorch U-Net (its ``encoder`` is filled). Every check happens before any
    copy, so a failure leaves the model untouched.
    """
    target = backbone_of(model)
    own = target.state_dict()  # tensors share storage with the module's parameters and buffers
    expected = {k: tuple(v.shape) for k, v in own.items() if not is_head_key(k)}
    problem = compare(state, expected)
    if problem:
        raise BenchxferError(f"cannot load the backbone into {type(model).__name__}: {problem}")
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)
    return sorted(state)

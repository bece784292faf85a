"""Build the network for an (arch, task): a classifier with a new head, or a U-Net.

Architectures are registered by name. A classifier head is a fresh ``Linear`` (ResNet) or 1x1 conv
(BiT), initialised as the recipe's ``head_init`` says (:data:`HEAD_INITS`: N(0, 0.01) weights and a zero bias
for the first study, PyTorch's default for the second), drawn from the torch RNG, so the trial's seed sets it.
The init (pretrained weights) is put in afterwards by :func:`benchxfer.zoo.apply_backbone`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from benchxfer.errors import BenchxferError
from benchxfer.registry import Registry
from benchxfer.tasks import get_task

if TYPE_CHECKING:  # torch loads when a model is built, not when the names are checked
    from torch import nn


def _normal_head(head: nn.Module) -> None:
    from torch import nn

    nn.init.normal_(head.weight, 0.0, 0.01)
    nn.init.zeros_(head.bias)


def _default_head(head: nn.Module) -> None:
    head.reset_parameters()  # PyTorch's own init of a fresh Linear / Conv2d (kaiming-uniform, a = sqrt(5))


HEAD_INITS: Registry[Callable[[nn.Module], None]] = Registry("head init")
HEAD_INITS.add("normal", _normal_head)  # the first study: N(0, 0.01), zero bias
HEAD_INITS.add("default", _default_head)  # the second study: a fresh 1x1 conv as PyTorch makes it


@dataclass(frozen=True)
class ArchCfg:
    name: str
    family: str  # "resnet" (torchvision names) or "bit" (timm ResNetV2 names)
    build_classifier: Callable[[int, str], nn.Module]
    unet_encoder: str | None  # segmentation_models_pytorch encoder name, None if no U-Net
    batch_norm: bool  # BatchNorm layers (torchvision ResNets); BiT has GroupNorm


ARCHS: Registry[ArchCfg] = Registry("architecture")


def _torchvision(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int, head_init: str = "normal") -> nn.Module:
        import torchvision
        from torch import nn

        model = getattr(torchvision.models, name)(weights=None)
        model.fc = nn.Linear(model.fc.in_features, num_classes)
        HEAD_INITS.get(head_init)(model.fc)
        return model

    return build


def _pytorch_defaults(model: nn.Module) -> None:
    """Every layer as PyTorch initialises it: the second study built BiT with its own ``bit.py`` (plain
    ``nn.Conv2d`` / ``nn.GroupNorm`` defaults), not timm's scheme (kaiming-normal, each block's last conv zeroed),
    which matters for a model trained from scratch (the chest pre-training)."""
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _timm(name: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int, head_init: str = "normal") -> nn.Module:
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=num_classes)
        _pytorch_defaults(model)
        HEAD_INITS.get(head_init)(model.get_classifier())  # the recipe says how the head starts
        return model

    return build


for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    ARCHS.add(_name, ArchCfg(_name, "resnet", _torchvision(_name), _name, batch_norm=True))
for _name, _timm_name in {
    "bit-r50x1": "resnetv2_50x1_bit",
    "bit-r50x3": "resnetv2_50x3_bit",
    "bit-r101x1": "resnetv2_101x1_bit",
    "bit-r101x3": "resnetv2_101x3_bit",
    "bit-r152x2": "resnetv2_152x2_bit",
    "bit-r152x4": "resnetv2_152x4_bit",
}.items():
    ARCHS.add(_name, ArchCfg(_name, "bit", _timm(_timm_name), None, batch_norm=False))


def has_batch_norm(arch: str, task: str) -> bool:
    """Does the (arch, task) net normalise by batch statistics? A BatchNorm arch, and any U-Net (its decoder)."""
    return ARCHS.get(arch).batch_norm or get_task(task).dense


def build_classifier(arch: str, num_classes: int, head_init: str = "normal") -> nn.Module:
    return ARCHS.get(arch).build_classifier(num_classes, head_init)


def build_unet(arch: str, classes: int = 1) -> nn.Module:
    """A U-Net with ``arch`` as its encoder (decoder 256-128-64-32-16 with BatchNorm), random weights."""
    cfg = ARCHS.get(arch)
    if cfg.unet_encoder is None:
        unet_archs = [n for n, c in ARCHS.items() if c.unet_encoder]
        raise BenchxferError(f"architecture {arch!r} has no U-Net encoder; use one of: {', '.join(unet_archs)}")
    import segmentation_models_pytorch as smp

    return smp.Unet(
        encoder_name=cfg.unet_encoder,
        encoder_weights=None,
        decoder_channels=(256, 128, 64, 32, 16),
        decoder_use_norm="batchnorm",
        classes=classes,
        activation=None,  # logits; the loss and metrics apply the sigmoid
    )


def build_model(arch: str, task: str, num_classes: int, head_init: str = "normal") -> nn.Module:
    """A classifier, or a U-Net for a dense task; the task (``benchxfer.tasks``) says how many outputs."""
    t = get_task(task)
    if t.dense:
        return build_unet(arch, classes=t.outputs(num_classes))
    return build_classifier(arch, t.outputs(num_classes), head_init)


def backbone_of(model: nn.Module) -> nn.Module:
    """The part of ``model`` that an init fills: the U-Net's encoder, or the classifier itself."""
    return getattr(model, "encoder", model)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    import torch

    return model.to(memory_format=torch.channels_last) if enabled else model

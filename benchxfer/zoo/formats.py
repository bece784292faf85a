"""Checkpoint formats: where each published file keeps its backbone, and how to get it out.

Each format is registered by name in :data:`FORMATS`. Most are a :class:`Layout`: the tensor dict lives
in the file itself or under a top-level key, carries one prefix, and has heads or extra encoders to drop
(``reference/FORMATS.md``). The result is checked against the architectures of the format's family, so a
format only "reads" a file when every remaining tensor is a backbone tensor of a known architecture.

``load_backbone(path, fmt=None)``: with ``fmt`` None, every detectable format is tried; if the readings
that succeed disagree, the file is ambiguous and the caller must name the format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from benchxfer.errors import BenchxferError
from benchxfer.models import ARCHS
from benchxfer.registry import Registry
from benchxfer.zoo.backbone import check_backbone, family_archs, is_head_key
from benchxfer.zoo.bit import HEAD_PREFIX as BIT_HEAD_PREFIX
from benchxfer.zoo.bit import bit_to_timm
from benchxfer.zoo.checkpoint import RawCheckpoint, read_checkpoint, trusted_unpickle

CANONICAL = "benchxfer"


class NotThisFormat(Exception):
    """A converter's reason why a file is not in its layout (becomes part of a BenchxferError)."""


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


@dataclass(frozen=True)
class Layout:
    """A tensor dict under ``wrappers`` (None = the file itself), with one of ``prefixes`` on every key.

    ``drop`` removes raw keys (other encoders, queues, heads) before the prefix is stripped;
    ``drop_after`` removes stripped keys (a classifier ``fc.``); ``rename`` maps to the target names.
    """

    wrappers: tuple[str | None, ...]
    prefixes: tuple[str, ...] = ("",)
    drop: tuple[str, ...] = ()
    drop_after: tuple[str, ...] = ()
    rename: Callable[[dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], list[str]]] | None = None

    def _tensors(self, obj: Any) -> dict[str, torch.Tensor]:
        for wrapper in self.wrappers:
            inner = obj if wrapper is None else (obj.get(wrapper) if isinstance(obj, dict) else None)
            if _is_tensor_dict(inner):
                return inner
        where = " or ".join("the file itself" if w is None else f"key {w!r}" for w in self.wrappers)
        raise NotThisFormat(f"no tensor dict at {where}")

    def __call__(self, obj: Any) -> dict[str, torch.Tensor]:
        tensors = self._tensors(obj)
        kept = {k: v for k, v in tensors.items() if not k.startswith(self.drop)} if self.drop else tensors
        if not kept:
            raise NotThisFormat("nothing left after dropping " + ", ".join(self.drop))
        usable = [p for p in self.prefixes if all(k.startswith(p) for k in kept)]
        if not usable:
            stray = next(k for k in kept if not k.startswith(self.prefixes))
            raise NotThisFormat(f"key {stray!r} does not start with {' or '.join(map(repr, self.prefixes))}")
        prefix = max(usable, key=len)
        out = {k[len(prefix):]: v for k, v in kept.items()}
        if self.drop_after:
            out = {k: v for k, v in out.items() if not k.startswith(self.drop_after)}
        if self.rename is not None:
            out, unknown = self.rename(out)
            if unknown:
                raise NotThisFormat(f"{len(unknown)} keys with no place in the backbone (e.g. {unknown[0]!r})")
        return out


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    family: str  # "resnet" (torchvision names) or "bit" (timm ResNetV2 names)
    convert: Callable[[Any], dict[str, torch.Tensor]] | None = None  # object -> backbone (raise NotThisFormat)
    detectable: bool = True  # tried when the caller gives no format
    needs_trust: bool = False  # conversion must unpickle arbitrary code


FORMATS: Registry[Format] = Registry("checkpoint format")
_ORDER: list[str] = []  # registration order: detection reports the first of equal readings


def register_format(fmt: Format) -> Format:
    FORMATS.add(fmt.name, fmt)
    _ORDER.append(fmt.name)
    return fmt


_MOCO_EXTRA = ("module.encoder_k.", "module.queue")
for _fmt in (
    Format("torchvision", "torchvision weights file: a bare ResNet state dict; fc dropped", "resnet",
           Layout((None,), drop_after=("fc.",))),
    Format("inat", "iNat2021 / iNat2021-mini supervised: torchvision checkpoint (bare or 'state_dict', "
           "optional 'module.'), 10,000-way fc dropped", "resnet",
           Layout((None, "state_dict"), ("", "module."), drop_after=("fc.",))),
    Format("barlowtwins", "Barlow Twins resnet50.pth: a bare torchvision backbone without fc", "resnet",
           Layout((None,))),
    Format("swav", "SwAV, DeepCluster-v2, SeLa-v2: file itself or 'state_dict', prefix 'module.'; "
           "projection_head and prototypes dropped", "resnet",
           Layout((None, "state_dict"), ("module.",), drop_after=("projection_head.", "prototypes."))),
    Format("moco", "MoCo v1/v2: 'state_dict', prefix 'module.encoder_q.'; encoder_k, queue and fc (MLP) "
           "dropped", "resnet",
           Layout(("state_dict",), ("module.encoder_q.",), drop=_MOCO_EXTRA, drop_after=("fc.",))),
    Format("pcl", "PCL v1/v2: the MoCo layout ('state_dict', 'module.encoder_q.', encoder_k and queue "
           "dropped)", "resnet",
           Layout(("state_dict",), ("module.encoder_q.",), drop=_MOCO_EXTRA, drop_after=("fc.",))),
    Format("pycontrast", "PyContrast InsDis, InfoMin, PIRL: 'model', prefix 'module.encoder.'; heads "
           "(head, jigsaw, head_jig) dropped", "resnet",
           Layout(("model",), ("module.encoder.",), drop=("module.head", "module.jigsaw"))),
    Format("cmc", "CMC: 'model', prefix 'module.encoder1.'; the other view's encoder dropped", "resnet",
           Layout(("model",), ("module.encoder1.",), drop=("module.encoder2.",))),
    Format("indomain", "in-domain and domain-adapted models (ChestX-ray14, CheXpert, *.pth.tar): "
           "'state_dict', optional 'module.'; classifier fc dropped", "resnet",
           Layout(("state_dict",), ("", "module."), drop_after=("fc.",))),
    Format("simclr", "SimCLR v1/v2 after the offline TensorFlow conversion: a torchvision state dict, "
           "bare or under 'state_dict'; fc dropped", "resnet",
           Layout((None, "state_dict"), drop_after=("fc.",))),
    Format("bit", "BiT ResNetV2 model.pth.tar: 'model' in big_transfer names, mapped onto timm "
           "resnetv2_*_bit; head.conv dropped", "bit",
           Layout(("model",), ("", "module."), drop_after=(BIT_HEAD_PREFIX,), rename=bit_to_timm)),
    Format("byol-haiku", "BYOL Haiku pickle (pretrain_res50x1.pkl): online network, HWIO->OIHW, BN "
           "statistics from the EMA state; unpickling runs code, so it needs --trust", "resnet",
           detectable=False, needs_trust=True),
    Format(CANONICAL, "benchxfer canonical backbone: safetensors in the target architecture's names, "
           "written by 'zoo import' and save_local_init", "", detectable=False),
):
    register_format(_fmt)


@dataclass
class Backbone:
    """A backbone read from a file: tensors in the target names, its architecture and source format."""

    state: dict[str, torch.Tensor]
    arch: str
    fmt: str


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k] is b[k] or torch.equal(a[k], b[k]) for k in a)


def _read_canonical(raw: RawCheckpoint, arch: str | None) -> Backbone:
    state = {k: v for k, v in raw.obj.items() if not is_head_key(k)}
    meta_arch = (raw.metadata or {}).get("arch")
    found = check_backbone(state, arch or meta_arch, None, f"{raw.path}")
    return Backbone(state, found, CANONICAL)


def _read_with(fmt: Format, raw: RawCheckpoint, arch: str | None) -> Backbone:
    try:
        state = fmt.convert(raw.obj)
    except NotThisFormat as why:
        raise BenchxferError(f"{raw.path} is not a {fmt.name!r} checkpoint: {why}") from None
    found = check_backbone(state, arch, fmt.family, f"{raw.path} read as {fmt.name!r}")
    return Backbone(state, found, fmt.name)


def _detect(raw: RawCheckpoint, arch: str | None) -> Backbone:
    readings: list[Backbone] = []
    for fmt in (FORMATS.get(n) for n in _ORDER):
        if not fmt.detectable:
            continue
        try:
            readings.append(_read_with(fmt, raw, None))
        except BenchxferError:
            continue
    if not readings:
        tried = ", ".join(n for n in _ORDER if FORMATS.get(n).detectable)
        raise BenchxferError(
            f"cannot tell the format of {raw.path}: no format fits it (tried {tried}); "
            "name it with --format/fmt to see why"
        )
    groups: list[list[Backbone]] = []
    for reading in readings:
        for group in groups:
            if _same(group[0].state, reading.state):
                group.append(reading)
                break
        else:
            groups.append([reading])
    if len(groups) > 1:
        options = " | ".join("/".join(r.fmt for r in g) for g in groups)
        raise BenchxferError(
            f"ambiguous checkpoint {raw.path}: it reads differently as {options}; "
            "choose one with --format (Python: fmt=)"
        )
    chosen = readings[0]
    if arch is not None:
        check_backbone(chosen.state, arch, None, f"{raw.path} read as {chosen.fmt!r}")
    return chosen


def read_backbone(path: str | Path, fmt: str | None = None, arch: str | None = None,
                  trust: bool = False) -> Backbone:
    """Read the backbone in ``path`` (format ``fmt`` or detected); check it against ``arch`` if given."""
    path = Path(path)
    spec = FORMATS.get(fmt) if fmt is not None else None
    if spec is not None and spec.needs_trust:
        if not trust:
            raise BenchxferError(
                f"refused {path}: the {spec.name!r} format is a plain pickle whose conversion executes "
                "code stored in the file; run it only on the file from the original authors, with --trust "
                "(Python: trust=True)"
            )
        from benchxfer.zoo.byol import byol_to_torchvision

        state = byol_to_torchvision(trusted_unpickle(path))
        found = check_backbone(state, arch, spec.family, f"{path} read as {spec.name!r}")
        return Backbone(state, found, spec.name)
    # the architectures the file may hold: the one asked for, else its format's family, else any
    family = spec.family if spec is not None else ""
    archs = [arch] if arch is not None else (family_archs(family) if family else list(ARCHS.names()))
    raw = read_checkpoint(path, archs)
    if raw.is_safetensors:
        if spec is not None and spec.name != CANONICAL:
            raise BenchxferError(f"{path} is a safetensors file ({CANONICAL!r} format), not {spec.name!r}")
        return _read_canonical(raw, arch)
    if spec is not None:
        if spec.name == CANONICAL:
            raise BenchxferError(f"{path} is not a {CANONICAL!r} file (expected safetensors)")
        return _read_with(spec, raw, arch)
    return _detect(raw, arch)


def load_backbone(path: str | Path, fmt: str | None = None, arch: str | None = None,
                  trust: bool = False) -> dict[str, torch.Tensor]:
    """The backbone in ``path`` in the target architecture's key names (see :func:`read_backbone`)."""
    return read_backbone(path, fmt, arch=arch, trust=trust).state

"""The built-in inits of the two source studies, described as data (after timm's ``PretrainedCfg``).

Each init names its architecture, the format its published checkpoint comes in, and its input
normalisation. ``zoo import NAME FILE`` converts the published file once into ``<zoo>/<NAME>.safetensors``
(the canonical backbone file that training loads); ``InitCfg.filename`` is that file's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchxfer.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNIT_MEAN = (0.0, 0.0, 0.0)  # SimCLR's TensorFlow models take [0, 1] inputs without normalisation
UNIT_STD = (1.0, 1.0, 1.0)
BIT_MEAN = (0.5, 0.5, 0.5)  # the second study's chest X-ray BiT models take inputs in [-1, 1]
BIT_STD = (0.5, 0.5, 0.5)
# the normalisation knob's values that read the init (besides data.transforms.NORMALISATIONS): "init", what the
# study fed it (InitCfg.mean/std); "init-trained", what it was pre-trained on (InitCfg.trained_mean/std)
INIT_NORMALISATIONS = ("init", "init-trained")


@dataclass(frozen=True)
class InitCfg:
    """One pretrained initialisation (or ``scratch``)."""

    name: str
    arch: str  # a name in benchxfer.models.ARCHS
    fmt: str | None  # format of the published checkpoint (FORMATS); None for scratch
    filename: str | None  # canonical backbone file in the zoo folder; None for scratch
    mean: tuple[float, float, float] = IMAGENET_MEAN  # what the study fed it (``normalization: init``)
    std: tuple[float, float, float] = IMAGENET_STD
    description: str = ""
    # the inputs it was pre-trained on, where the study fed it others (``normalization: init-trained``); None: mean/std
    trained_mean: tuple[float, float, float] | None = None
    trained_std: tuple[float, float, float] | None = None
    source: str = ""  # URL of the published checkpoint, or provenance text
    sha256: str | None = None  # of the canonical file, once recorded


INITS: Registry[InitCfg] = Registry("init")


def register_init(cfg: InitCfg) -> InitCfg:
    return INITS.add(cfg.name, cfg)


def canonical_filename(name: str) -> str:
    return f"{name}.safetensors"


def _r50(name: str, fmt: str, description: str, source: str, **kw) -> InitCfg:
    return register_init(InitCfg(name, "resnet50", fmt, canonical_filename(name), description=description,
                                 source=source, **kw))


register_init(InitCfg("scratch", "resnet50", None, None, description="random initialisation (no checkpoint)",
                      source="-"))
_FB = "https://dl.fbaipublicfiles.com"
_ZENODO = "https://zenodo.org/record/5205234/files"
_PYCONTRAST = "https://github.com/HobbitLong/PyContrast/blob/master/pycontrast/docs/MODEL_ZOO.md"
_INAT = "https://cornell.box.com/s/bnyhq5lwobu6fgjrub44zle0pyjijbmw"
_r50("imagenet", "torchvision", "supervised ImageNet-1k (torchvision IMAGENET1K_V1)",
     "https://download.pytorch.org/models/resnet50-0676ba61.pth")
_r50("inat2021", "inat", "supervised iNat2021", _INAT)
_r50("inat2021-mini", "inat", "supervised iNat2021-mini", _INAT)
_r50("barlowtwins", "barlowtwins", "Barlow Twins, 1000 epochs",
     f"{_FB}/barlowtwins/ep1000_bs2048_lrw0.2_lrb0.0048_lambd0.0051/resnet50.pth")
_r50("swav", "swav", "SwAV, 800 epochs", f"{_FB}/deepcluster/swav_800ep_pretrain.pth.tar")
_r50("deepcluster-v2", "swav", "DeepCluster-v2, 800 epochs", f"{_FB}/deepcluster/deepclusterv2_800ep_pretrain.pth.tar")
_r50("sela-v2", "swav", "SeLa-v2, 400 epochs", f"{_FB}/deepcluster/selav2_400ep_pretrain.pth.tar")
_r50("insdis", "pycontrast", "InsDis (PyContrast)",
     "https://www.dropbox.com/sh/87d24jqsl6ra7t2/AACcsSIt1_Njv7GsmsuzZ6Sta/InsDis.pth")
_r50("moco-v1", "moco", "MoCo v1, 200 epochs",
     f"{_FB}/moco/moco_checkpoints/moco_v1_200ep/moco_v1_200ep_pretrain.pth.tar")
_r50("moco-v2", "moco", "MoCo v2, 800 epochs",
     f"{_FB}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar")
_r50("pcl-v1", "pcl", "PCL v1, 200 epochs",
     "https://storage.googleapis.com/sfr-pcl-data-research/PCL_checkpoint/PCL_v1_epoch200.pth.tar")
_r50("pcl-v2", "pcl", "PCL v2, 200 epochs",
     "https://storage.googleapis.com/sfr-pcl-data-research/PCL_checkpoint/PCL_v2_epoch200.pth.tar")
# The first study normalised every init with ImageNet mean/std (Version1/main_classification.py: --normalization
# "imagenet" by default, for all), SimCLR's too, although SimCLR's TensorFlow models were trained on [0, 1] inputs.
_r50("simclr-v1", "simclr", "SimCLR v1 (ResNet50_1x, converted from TensorFlow with tonylins/simclr-converter)",
     "https://storage.cloud.google.com/simclr-gcs/checkpoints/ResNet50_1x.zip",
     trained_mean=UNIT_MEAN, trained_std=UNIT_STD)
_r50("simclr-v2", "simclr", "SimCLR v2 (r50_1x_sk0, converted from TensorFlow with Separius/SimCLRv2-Pytorch)",
     "https://console.cloud.google.com/storage/browser/simclr-checkpoints/simclrv2/pretrained/r50_1x_sk0",
     trained_mean=UNIT_MEAN, trained_std=UNIT_STD)
_r50("infomin", "pycontrast", "InfoMin, 800 epochs (PyContrast)",
     "https://www.dropbox.com/sh/87d24jqsl6ra7t2/AAAzMTynP3Qc8mIE4XWkgILUa/InfoMin_800.pth")
_r50("pirl", "pycontrast", "PIRL (PyContrast)", _PYCONTRAST)
_r50("byol", "byol-haiku", "BYOL (Haiku pickle; import needs --trust)",
     "https://storage.googleapis.com/deepmind-byol/checkpoints/pretrain_res50x1.pkl")
_r50("chestxray14", "indomain", "supervised on ChestX-ray14 (in-domain)", f"{_ZENODO}/chestxray14.pth.tar")
_r50("chexpert", "indomain", "supervised on CheXpert (in-domain)", f"{_ZENODO}/chexpert.pth.tar")
_r50("imagenet-chestxray14", "indomain", "ImageNet -> ChestX-ray14 (domain-adapted)",
     f"{_ZENODO}/ImageNet_chestxray14.pth.tar")
_r50("imagenet-chexpert", "indomain", "ImageNet -> CheXpert (domain-adapted)", f"{_ZENODO}/ImageNet_chexpert.pth.tar")

# Second study: BiT models released as <source>_<model>/model.pth.tar (scripts/download_model.sh).
_BIT_URL = "https://fz-juelich.sciebo.de/s/9kqbf6yBDyJnQfd/download?path=%2F{folder}&files=model.pth.tar"
# source key -> (folder, what, normalisation): the study fine-tuned the ImageNet-1k/21k models with ImageNet
# mean/std and its chest X-ray models with 0.5/0.5.
_NATURAL = (IMAGENET_MEAN, IMAGENET_STD)
_CHEST = (BIT_MEAN, BIT_STD)
_BIT_SOURCES = {
    "s": ("imagenet1k", "ImageNet-1k (BiT-S)", _NATURAL),
    "m": ("imagenet21k", "ImageNet-21k (BiT-M)", _NATURAL),
    "chexpert": ("chexpert", "CheXpert", _CHEST),
    "chexpert-mimic": ("chexpert_mimic", "CheXpert + MIMIC-CXR", _CHEST),
    "chexpert-mimic-nih": ("chexpert_mimic_nih", "CheXpert + MIMIC-CXR + NIH ChestX-ray14", _CHEST),
    "cxr": ("chexpert_mimic_nih_padchest", "CheXpert + MIMIC-CXR + NIH ChestX-ray14 + PadChest", _CHEST),
}
for _key, (_folder, _what, (_mean, _std)) in _BIT_SOURCES.items():
    for _size, _arch, _model in (("r50x1", "bit-r50x1", "bit50x1"), ("r152x4", "bit-r152x4", "bit152x4")):
        _name = f"bit-{_key}-{_size}"
        register_init(InitCfg(
            _name, _arch, "bit", canonical_filename(_name), mean=_mean, std=_std,
            description=f"BiT ResNet-{_size[1:]} pre-trained on {_what}",
            source=_BIT_URL.format(folder=f"{_folder}_{_model}"),
        ))

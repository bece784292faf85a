"""The init zoo: every pretrained initialisation of the two studies, loaded exactly and safely.

    from benchxfer import zoo
    cfg, path = zoo.resolve_init("moco-v2")          # before Ray starts: the file must be there
    state = zoo.load_backbone(path)                  # dict in torchvision / timm names, no head
    zoo.apply_backbone(model, state)                 # into a classifier or a U-Net encoder

The init registry loads at once; the parts that need torch (formats, the store, loading into a model)
load on first use, so that ``benchxfer --help`` stays fast. See ``docs/zoo.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

from benchxfer.paths import zoo_dir
from benchxfer.zoo.inits import INITS, InitCfg, register_init

_LAZY = {  # name -> the module that holds it (loaded on first access)
    **dict.fromkeys(("apply_backbone", "backbone_spec"), "benchxfer.zoo.backbone"),
    **dict.fromkeys(("FORMATS", "Backbone", "Format", "Layout", "load_backbone", "read_backbone",
                     "register_format"), "benchxfer.zoo.formats"),
    **dict.fromkeys(("get_init", "import_init", "list_inits", "read_index", "resolve_init", "save_local_init",
                     "sha256_file", "verify_inits"), "benchxfer.zoo.store"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FORMATS", "INITS", "Backbone", "Format", "InitCfg", "Layout", "apply_backbone", "backbone_spec",
    "get_init", "import_init", "list_inits", "load_backbone", "read_backbone", "read_index", "register_format",
    "register_init", "resolve_init", "save_local_init", "sha256_file", "verify_inits", "zoo_dir",
]

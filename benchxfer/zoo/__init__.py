"""The init zoo: every pretrained initialisation of the two studies, loaded exactly and safely.

    from benchxfer import zoo
    cfg, path = zoo.resolve_init("moco-v2")          # before Ray starts: the file must be there
    state = zoo.load_backbone(path)                  # dict in torchvision / timm names, no head
    zoo.apply_backbone(model, state)                 # into a classifier or a U-Net encoder

See ``docs/zoo.md``.
"""

from benchxfer.paths import zoo_dir
from benchxfer.zoo.backbone import apply_backbone, backbone_spec
from benchxfer.zoo.formats import FORMATS, Backbone, Format, Layout, load_backbone, read_backbone, register_format
from benchxfer.zoo.inits import INITS, InitCfg, register_init
from benchxfer.zoo.store import (
    get_init,
    import_init,
    list_inits,
    read_index,
    resolve_init,
    save_local_init,
    sha256_file,
    verify_inits,
)

__all__ = [
    "FORMATS", "INITS", "Backbone", "Format", "InitCfg", "Layout", "apply_backbone", "backbone_spec",
    "get_init", "import_init", "list_inits", "load_backbone", "read_backbone", "read_index", "register_format",
    "register_init", "resolve_init", "save_local_init", "sha256_file", "verify_inits", "zoo_dir",
]

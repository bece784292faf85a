"""One module per family of on-disk layouts; importing this package registers every dataset."""

from benchxfer.data.readers import chest, natural, nih, seg, tb  # noqa: F401

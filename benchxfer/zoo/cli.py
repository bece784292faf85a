"""``benchxfer zoo``: list, import and verify the pretrained inits."""

from __future__ import annotations

from pathlib import Path

import click

from benchxfer.errors import BenchxferError

zoo_option = click.option(
    "--zoo", "zoo", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
    help="The zoo folder (default: $BENCHXFER_ZOO, else ~/.benchxfer/zoo).",
)


@click.group()
def zoo() -> None:
    """The init zoo: pretrained checkpoints, converted once into canonical backbone files.

    \b
    benchxfer zoo list                         every init and whether its file is present
    benchxfer zoo import moco-v2 FILE          convert a published checkpoint into the zoo
    benchxfer zoo verify                       presence, checksum and loadability
    """


@zoo.command("list")
@zoo_option
def list_cmd(zoo: Path | None) -> None:
    """Every init: architecture, checkpoint format, and whether its file is in the zoo folder."""
    from benchxfer.zoo.store import list_inits, zoo_dir

    folder = zoo_dir(zoo)
    rows = []
    for cfg in list_inits(zoo):
        if cfg.filename is None:
            present = "-"
        else:
            present = "yes" if (folder / cfg.filename).is_file() else "no"
        rows.append((cfg.name, cfg.arch, cfg.fmt or "-", present, cfg.description))
    header = ("init", "arch", "format", "file", "description")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    click.echo(f"zoo folder: {folder}")
    for row in [header] + rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])


@zoo.command("formats")
def formats_cmd() -> None:
    """The checkpoint formats that `zoo import --format` accepts, and what each holds."""
    from benchxfer.zoo.formats import FORMATS

    width = max(len(n) for n in FORMATS.names())
    for name, fmt in FORMATS.items():
        click.echo(f"{name.ljust(width)}  {fmt.description}")


@zoo.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", default=None, metavar="F",
              help="Checkpoint format (see `benchxfer zoo formats`); default: the init's own format, "
                   "or detected from the file's keys.")
@click.option("--trust", is_flag=True, default=False,
              help="Allow the one conversion that must unpickle arbitrary code: the BYOL Haiku pickle. "
                   "A pickle can run any program while it loads; use this only on the file published by "
                   "the original authors. Every other format is read with weights_only=True and never "
                   "runs code.")
@click.option("--force", is_flag=True, default=False,
              help="Replace an init that is already in the zoo under NAME (without it, that is refused).")
@zoo_option
def import_cmd(name: str, file: Path, fmt: str | None, trust: bool, force: bool, zoo: Path | None) -> None:
    """Convert FILE once into the zoo's canonical backbone file for init NAME and record its SHA-256.

    NAME is a built-in init (see `benchxfer zoo list`) or a new local name; for a new name the
    architecture is read from the file.
    """
    from benchxfer.zoo.store import import_init

    cfg, path, backbone = import_init(name, file, fmt=fmt, trust=trust, zoo=zoo, force=force)
    click.echo(
        f"imported {cfg.name}: {backbone.arch} backbone, {len(backbone.state)} tensors from {file} "
        f"(format {backbone.fmt}) -> {path} sha256 {cfg.sha256}"
    )


@zoo.command("verify")
@click.argument("name", required=False)
@zoo_option
def verify_cmd(name: str | None, zoo: Path | None) -> None:
    """Check NAME (or every init with a file or record in the zoo): presence, checksum, loadability.

    Exits non-zero if any check fails.
    """
    from benchxfer.zoo.store import verify_inits

    checks = verify_inits(name, zoo)
    if not checks:
        click.echo("no init files in the zoo folder yet; add one with `benchxfer zoo import NAME FILE`")
        return
    for check in checks:
        click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.message}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        raise BenchxferError(f"{len(failed)} of {len(checks)} inits failed verification: {', '.join(failed)}")

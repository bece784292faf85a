"""``benchxfer report`` and ``benchxfer compare``: a sweep's (or several sweeps') tables and figures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from benchxfer.report.results import (
    DEFAULT_BASELINE,
    RunSet,
    collect,
    collect_many,
    default_baseline,
    default_tracking_uri,
)

# the keys of benchxfer.report.TESTS, which validates them again; not imported here so that
# ``benchxfer --help`` does not load matplotlib and scipy
_TEST_NAMES = ("welch", "student")


def _options(f):
    f = click.option("--ddof", type=click.Choice(["0", "1"]), default="0", show_default=True,  # report.DEFAULT_DDOF
                     help="The std printed after ±: 0, the population std (np.std, as the studies' code "
                          "computed it); 1, the sample std. Every table and figure says which.")(f)
    f = click.option("--tracking-uri", default=None, metavar="URI",
                     help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the local store).")(f)
    f = click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Output folder (default: ./reports/<sweep>).")(f)
    f = click.option("--test", type=click.Choice(_TEST_NAMES), default="welch", show_default=True,
                     help="t-test against the baseline: Welch's (unequal variances) or Student's.")(f)
    f = click.option("--baseline", default=None, metavar="INIT",
                     help=f"Init to test against (default: {DEFAULT_BASELINE!r} when present, else no tests).")(f)
    return f


def _baseline(runs: RunSet, asked: str | None) -> str | None:
    """An explicit --baseline must exist (summarise checks it); the default applies only when present."""
    if asked is not None:
        return asked
    return default_baseline(runs.frame)


@contextlib.contextmanager
def _artifacts_uri(runs: RunSet, tracking_uri: str | None) -> Iterator[str | None]:
    """The URI the learning curves are read from and the report is published to, or None when the runs did not
    come from MLflow. The home's embedded store is its SQLite file: no server is started (about 13 s on 2 cores),
    its runs' artifacts are files under ``<home>/mlartifacts`` (``tracking.local_artifact_dir``); while the home's
    server runs (a sweep), it is joined, so the report's few writes go where the sweep's do."""
    if "MLflow " not in runs.source:
        yield None
        return
    uri = tracking_uri or default_tracking_uri()
    if uri and not uri.startswith("sqlite:"):
        yield uri
        return
    from benchxfer.tracking import LocalServer, embedded_artifacts
    from benchxfer.tracking import tracking_uri as serve

    if uri and embedded_artifacts(uri) is not None and LocalServer().running() is None:
        yield uri
        return
    with serve(None, echo=click.echo) as served:
        yield served


def _run(runs: RunSet, out: Path, baseline: str | None, test: str, title: str, ddof: str, uri: str | None):
    from benchxfer.report.results import load_curves
    from benchxfer.report.write import write_report_into  # matplotlib and scipy load only here

    history = load_curves(runs, uri) if uri else None
    report = write_report_into(runs, out, baseline=_baseline(runs, baseline), test=test, title=title, ddof=int(ddof),
                          history=history)
    click.echo(f"# {title}\n\nSource: {runs.source}\n\n{report.summary.markdown()}\n")
    for line in runs.damaged:
        click.echo(f"Skipped a damaged trial: {line}")
    click.echo("Wrote:")
    for path in report.files:
        click.echo(f"  {path}")
    return report


@click.command("report")
@click.argument("sweep")
@_options
@click.option("--publish/--no-publish", default=True, show_default=True,
              help="Also put the table, figures, report.html and runs.parquet on the sweep's MLflow run "
                   "(when the runs came from MLflow).")
def report(sweep: str, baseline: str | None, test: str, out: Path | None, tracking_uri: str | None, ddof: str,
           publish: bool) -> None:
    """Tables, t-tests and figures for SWEEP: runs.parquet/csv, summary.csv, table.md, PNGs, report.html."""
    from benchxfer.report.results import recorded_store, store_of

    was, now = recorded_store(sweep), store_of(tracking_uri)
    if was is not None and was != now:  # said, not refused: the trials' own result files fill in what it lacks
        click.echo(f"Note: sweep {sweep!r} records its runs in {was}; this report reads {now}")
    runs = collect(sweep, tracking_uri)
    with _artifacts_uri(runs, tracking_uri) as uri:
        rep = _run(runs, out or Path("reports") / sweep, baseline, test, f"benchxfer report: {sweep}", ddof, uri)
        if publish and uri:
            from benchxfer.report.publish import publish as publish_report

            publish_report(sweep, uri, report=rep, echo=click.echo)


@click.command("compare")
@click.argument("sweeps", nargs=-1, required=True)
@_options
def compare(sweeps: tuple[str, ...], baseline: str | None, test: str, out: Path | None,
            tracking_uri: str | None, ddof: str) -> None:
    """The same summary across SWEEPS, one column group per sweep (default out ./reports/compare-A-B...)."""
    if len(set(sweeps)) != len(sweeps):
        raise click.BadParameter(f"a sweep is named twice in {' '.join(sweeps)}", param_hint="SWEEPS")
    runs = collect_many(list(sweeps), tracking_uri)
    with _artifacts_uri(runs, tracking_uri) as uri:
        _run(runs, out or Path("reports") / ("compare-" + "-".join(sweeps)), baseline, test,
             f"benchxfer compare: {', '.join(sweeps)}", ddof, uri)

"""Screenshots of where researchers look, for docs/report.md: the MLflow runs page of a sweep and its report.html.

    python benchmarks/screenshots.py [--sweep demo] [--out docs/img]      (make screenshots)

It uses the sweep's runs in $BENCHXFER_HOME (run `make demo` first for the demo), starts the embedded MLflow
server, runs `benchxfer report SWEEP` (which publishes the table and figures to the sweep run), and takes
headless-Chromium screenshots of the experiment's runs page (workflowType=machine_learning), of the sweep
run's artifacts (summary_table.json) and of report.html. Needs `chromium` (or `chromium-browser`,
`google-chrome`) on PATH. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def shoot(browser: str, url: str, png: Path, size: str = "1800,900", wait_ms: int = 15000) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size}", f"--virtual-time-budget={wait_ms}",
                        f"--screenshot={png}", url], check=True, capture_output=True, timeout=120)
    if not png.is_file() or png.stat().st_size < 10_000:
        raise SystemExit(f"screenshot of {url} failed (no or blank {png})")
    print(f"  {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", default="demo")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        raise SystemExit(f"no headless browser: install one of {', '.join(BROWSERS)}")
    from benchxfer.report.publish import parent_run_id
    from benchxfer.tracking import client, tracking_uri, ui_url

    args.out.mkdir(parents=True, exist_ok=True)
    with tracking_uri(None, echo=print) as uri, tempfile.TemporaryDirectory() as tmp:
        report_dir = Path(tmp) / "report"
        subprocess.run([sys.executable, "-m", "benchxfer.cli", "report", args.sweep, "--tracking-uri", uri,
                        "--out", str(report_dir)], check=True, cwd=ROOT)
        c = client(uri)
        exp = c.get_experiment_by_name(args.sweep)
        parent = parent_run_id(c, args.sweep)
        print("Screenshots:")
        shoot(browser, ui_url(uri, exp.experiment_id), args.out / "mlflow_runs.png")
        shoot(browser, f"{uri}/#/experiments/{exp.experiment_id}/runs/{parent}/artifacts/summary_table.json",
              args.out / "mlflow_summary_table.png")
        shoot(browser, (report_dir / "report.html").as_uri(), args.out / "report_html.png", size="1400,2400",
              wait_ms=2000)


if __name__ == "__main__":
    main()

"""Screenshots for the README: what reviewing looks like, before anyone installs ponder.

``python -m bench.screenshots --domain medicine`` (after ``make demo``):

1. renders the report of the domain's latest predictions version (or ``--version``) into a
   temporary folder and photographs ``index.html`` and the page of the first wrong case,
   scrolled to its flagged suspect step;
2. starts ``mlflow server`` on loopback with a throwaway SQLite store, logs that case's
   trace exactly as infer does (``tasks.tracking.log_traces``: one span per step, one TOOL
   span per calculator call), opens it in the MLflow UI and photographs the trace view.

The pictures go to ``--out`` (``docs/``). Needs Debian's chromium and chromedriver
(``make browser``); nothing downloads a browser.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

OUT = Console(highlight=False, markup=False)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--domain", default="medicine")
    ap.add_argument("--version", default=None, help="predictions version; default the latest")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    return ap.parse_args()


@contextmanager
def browser(profile: Path) -> Iterator[Any]:
    """Headless Chromium through Debian's chromedriver, Selenium Manager offline."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    opts = Options()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(
        service=Service(executable_path=shutil.which("chromedriver")), options=opts
    )
    try:
        yield driver
    finally:
        driver.quit()


def report_shots(driver: Any, index: Path, out: Path) -> str | None:
    """The index and the first wrong case's page; returns that case's reference."""
    from selenium.webdriver.common.by import By

    driver.get(index.as_uri())
    driver.save_screenshot(str(out / "report-index.png"))
    wrong = driver.find_elements(By.CSS_SELECTOR, "#cases tr[data-correct='0'] a")
    if not wrong:
        return None
    ref = wrong[0].text
    wrong[0].click()
    flagged = driver.find_elements(
        By.CSS_SELECTOR, f"#{ref} ~ details.suspect, #{ref} ~ details details.suspect"
    )
    target = flagged[0] if flagged else driver.find_element(By.ID, ref)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
    driver.save_screenshot(str(out / "report-case.png"))
    return ref


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """``mlflow server`` on a free loopback port with a SQLite store in ``folder``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--default-artifact-root", str(folder / "artifacts")]  # fmt: skip
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)  # noqa: S310 - loopback
                break
            except OSError:
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def trace_shot(
    driver: Any, ctx: Any, *, version: str | None, case_ref: str, server: str, out: Path
) -> None:
    """Log the case's trace to ``server`` as infer does, open it, photograph the view."""
    import mlflow
    import polars as pl
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from models.registry import TRACE_EXPERIMENT
    from models.settings import get_settings
    from tasks.report import load_trees
    from tasks.reward import load_cases
    from tasks.tracking import log_traces

    lake = ctx.lake
    info = (
        lake.info(ctx.name, "predictions", version)
        if version
        else lake.latest(ctx.name, "predictions")
    )
    frame = pl.read_parquet(info.path / "part-*.parquet")
    cases, _ = load_cases(ctx)
    case = next(c for c in cases.values() if ctx.redactor.case_ref(c.id) == case_ref)
    trees = load_trees(pl.read_parquet(info.path / "trees.parquet"))
    texts = dict(zip(frame["case_id"], frame["text"], strict=True))
    os.environ["PONDER_TRACKING_URI"] = server
    get_settings.cache_clear()
    traces = log_traces.fn(ctx, cases=[case], trees=trees, texts=texts)
    experiment = mlflow.get_experiment_by_name(TRACE_EXPERIMENT).experiment_id
    trace = traces[case.id]
    driver.get(f"{server}/#/experiments/{experiment}/traces?selectedEvaluationId={trace}"
               f"&traceId={trace}")  # fmt: skip
    WebDriverWait(driver, 60).until(
        lambda d: d.find_elements(By.XPATH, "//*[contains(text(), 'step 1')]")
    )
    time.sleep(2)  # let the span tree finish laying out
    driver.save_screenshot(str(out / "mlflow-trace.png"))


def main() -> None:
    from tasks.context import StageContext
    from tasks.tracking import report_version

    args = _args()
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = StageContext.open(args.domain)
    with tempfile.TemporaryDirectory(prefix="ponder-shots-") as tmp:
        folder = Path(tmp)
        index = report_version(ctx, version=args.version, output=folder / "report")
        with browser(folder / "profile") as driver:
            ref = report_shots(driver, index, args.out)
            OUT.print(f"wrote {args.out / 'report-index.png'} and report-case.png ({ref})")
            if ref is None:
                OUT.print("no wrong case in this version: no case page or trace shot")
                return
            with mlflow_server(folder) as server:
                trace_shot(
                    driver, ctx, version=args.version, case_ref=ref, server=server, out=args.out
                )
            OUT.print(f"wrote {args.out / 'mlflow-trace.png'}")


if __name__ == "__main__":
    main()

"""A throwaway `mlflow server` on loopback for the tests that need a real one (the fault
suite, the reviewer's end-to-end path): a SQLite store and artifact folder under ``root``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def mlflow_server(root: Path, port: int) -> subprocess.Popen:
    """Start the server and wait for /health; its log is ``root/mlflow.log``."""
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    log = open(root / "mlflow.log", "ab")  # noqa: SIM115 (the server owns it)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise AssertionError((root / "mlflow.log").read_text()[-2000:])


def stop(proc: subprocess.Popen) -> None:
    """Kill the server's whole process group (its gunicorn/uvicorn workers too)."""
    os.killpg(proc.pid, 9)
    proc.wait(30)

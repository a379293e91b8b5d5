"""`ponder serve` for the tests on real servers: a stack on free ports with a home of its
own, the Prefect client of it, and the tiny model registered as the base policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.serve import free_port

BIN = Path(sys.executable).parent


@contextmanager
def serve(home: Path, env: dict[str, str], args: list[str]) -> Iterator[dict[str, str]]:
    """`ponder serve` (plus ``args``) with ``env`` over this environment, once it says
    ready; yields the environment a client of it needs, and stops it (Ctrl-C) after."""
    env = {
        **os.environ,
        "PONDER_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PONDER_BACKEND": "transformers",
        **env,
    }
    env.pop("PREFECT_API_URL", None)
    ports = [str(free_port()), str(free_port())]
    cmd = [str(BIN / "ponder"), "serve", "--prefect-port", ports[0], "--mlflow-port", ports[1]]
    cmd += ["--poll-seconds", "2", *args]
    log = home / "serve.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, "ready", proc, 300)
        yield {
            **env,
            "PREFECT_API_URL": f"http://127.0.0.1:{ports[0]}/api",
            "PONDER_TRACKING_URI": f"http://127.0.0.1:{ports[1]}",
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"ponder serve exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(1)
    raise AssertionError(f"ponder serve not ready in {timeout} s:\n{log.read_text()}")


def client(env: dict[str, str]) -> Any:
    """A sync Prefect client of the served API."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        return get_client(sync_client=True)


def register_tiny_base(tiny_model: Path, env: dict[str, str], monkeypatch) -> None:
    """The tiny model as ponder-base-policy@champion on the served MLflow."""
    from models.registry import register_hf_dir
    from models.settings import get_settings

    monkeypatch.setenv("PONDER_TRACKING_URI", env["PONDER_TRACKING_URI"])
    monkeypatch.setenv("PONDER_HOME", env["PONDER_HOME"])
    get_settings.cache_clear()
    try:
        register_hf_dir(tiny_model, "ponder-base-policy", alias="champion")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()

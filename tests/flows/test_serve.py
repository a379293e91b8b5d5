"""ponder serve / deploy without starting servers: bad ports, no server, process groups.
The servers themselves run in tests/e2e/test_scheduled_loop.py."""

from __future__ import annotations

import socket
import sys

import pytest

from domains.errors import PonderError
from flows import serve
from flows.serve import ServeConfig, Stack, check_port, deploy, deploy_command


def test_a_port_in_use_is_refused_naming_the_flag() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PonderError, match="already in use") as err:
            check_port("127.0.0.1", port, "prefect_port")
    assert err.value.field == "prefect_port" and "--prefect-port" in err.value.fix


def test_deploy_needs_a_server(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(serve, "state_file", lambda: tmp_path / "serve.json")
    with pytest.raises(PonderError, match="no Prefect server") as err:
        deploy()
    assert "ponder serve" in err.value.fix


def test_deploy_applies_the_project_file_through_the_prefect_cli() -> None:
    cmd = deploy_command()
    assert cmd[1:3] == ["--no-prompt", "deploy"] and cmd[-1] == "--all"
    assert cmd[cmd.index("--prefect-file") + 1].endswith("deployments/prefect.yaml")
    assert deploy_command(["infer-medicine"])[-2:] == ["--name", "infer-medicine"]


def test_stop_ends_every_process_group(tmp_path) -> None:
    """A server's workers are grandchildren: stop() must end them too, not just the child."""
    import time

    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, time, pathlib; p = subprocess.Popen(['sleep', '60']); "
        f"pathlib.Path({str(pidfile)!r}).write_text(str(p.pid)); time.sleep(60)"
    )
    stack = Stack(config=ServeConfig(), logs=tmp_path, env={})
    stack.start("sleeper", [sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while not pidfile.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    assert not stack.dead() and _alive(grandchild)
    stack.stop(timeout=5)
    assert stack.dead()["sleeper"] is not None
    deadline = time.monotonic() + 5  # the grandchild is reaped by init, not by us
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the grandchild outlived stop()"
    assert (tmp_path / "sleeper.log").is_file()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    from pathlib import Path

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.serving
def test_with_auth_an_unauthenticated_client_is_refused(tmp_path, monkeypatch) -> None:
    """``ponder serve --auth``: both servers answer their health checks, refuse a client
    without credentials (401) and serve one with them; the credentials file and the state
    file that carries them are owner-only."""
    import base64
    import json
    import urllib.error
    import urllib.request

    from models.settings import get_settings

    monkeypatch.setenv("PONDER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PONDER_SERVE_PASSWORD", raising=False)
    get_settings.cache_clear()
    config = ServeConfig(
        prefect_port=serve.free_port(), mlflow_port=serve.free_port(), workers=False, auth=True
    )
    stack = serve.start_stack(config)
    try:
        user, password = serve.credentials()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        calls = {
            "prefect": (f"{config.prefect_url}/api/flows/filter", b"{}"),
            "mlflow": (
                f"{config.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1",
                None,
            ),
        }
        for name, (url, body) in calls.items():
            for auth, expected in ((None, 401), (token, 200)):
                request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
                request.add_header("Content-Type", "application/json")
                if auth:
                    request.add_header("Authorization", f"Basic {auth}")
                try:
                    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
                        status = reply.status
                except urllib.error.HTTPError as err:
                    status = err.code
                assert status == expected, (name, auth is not None, status)
        home = tmp_path / "home"
        for path in (home / "serve-credentials.json", home / "serve.json"):
            assert path.stat().st_mode & 0o077 == 0, path
        assert json.loads((home / "serve.json").read_text())["env"]["MLFLOW_TRACKING_USERNAME"]
    finally:
        stack.stop()
        get_settings.cache_clear()

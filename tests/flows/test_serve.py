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

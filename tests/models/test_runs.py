"""A run whose process died (kill -9) is closed FAILED and linked by the next run."""

from __future__ import annotations

import socket
import subprocess
import sys

import mlflow

from models.registry import connect, ensure_experiment
from models.runs import tracked_run


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _orphan(exp: str, name: str, pid: int) -> str:
    client = mlflow.MlflowClient()
    run = client.create_run(exp, run_name=name)
    client.set_tag(run.info.run_id, "ponder.host", socket.gethostname())
    client.set_tag(run.info.run_id, "ponder.pid", str(pid))
    return run.info.run_id


def test_orphans_are_failed_and_linked_live_runs_left_alone() -> None:
    connect()
    exp = ensure_experiment()
    dead = _orphan(exp, "collect-orphan-test", _dead_pid())
    live = _orphan(exp, "collect-orphan-test", 1)  # pid 1 is alive
    with tracked_run("collect-orphan-test", experiment_id=exp) as run:
        new = run.info.run_id
    client = mlflow.MlflowClient()
    assert client.get_run(dead).info.status == "FAILED"
    assert "owner pid gone" in client.get_run(dead).data.tags["ponder.killed"]
    assert client.get_run(live).info.status == "RUNNING"
    tags = client.get_run(new).data.tags
    assert tags["ponder.resumes"] == dead and client.get_run(new).info.status == "FINISHED"


def test_reopening_the_killed_run_counts_the_attempt() -> None:
    connect()
    exp = ensure_experiment()
    killed = _orphan(exp, "finetune-orphan-test", _dead_pid())
    with tracked_run("finetune-orphan-test", experiment_id=exp, run_id=killed):
        pass
    run = mlflow.MlflowClient().get_run(killed)
    assert run.info.status == "FINISHED" and run.data.tags["ponder.attempts"] == "2"
    assert "ponder.killed" in run.data.tags


def test_a_run_id_from_another_tracking_store_starts_a_new_run() -> None:
    connect()
    exp = ensure_experiment()
    with tracked_run("finetune-moved-store", experiment_id=exp, run_id="0" * 32) as run:
        assert run.info.run_id != "0" * 32
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"

"""The loop on real servers (loopback only): `ponder serve` starts a Prefect server, an MLflow
server, the pools and process workers; `ponder deploy` applies the project's prefect.yaml
through the Prefect CLI; then a short interval schedule fires collect, infer runs on demand,
and one `ponder.feedback.ready` event chains refresh-reward -> finetune -> evaluate-promote
through the deployments' own triggers. Everything runs the tiny random model with the
transformers backend; the deployments' parameters are shrunk through the Prefect API the
way an operator edits them in the UI.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serving import client as _client
from tests.e2e.serving import register_tiny_base as _register_tiny_base
from tests.e2e.serving import serve

pytestmark = pytest.mark.serving
BIN = Path(sys.executable).parent
TINY_SEARCH = {"width": 2, "max_tokens": 24, "step_tokens": 8, "max_depth": 3, "log_traces": 0}
TINY = {  # deployment -> params for the tiny model
    "collect/collect-medicine": {
        "per_cell": 2,
        "sources": ["generator"],
        "train": 0.6,
        "eval": 0.1,
        "test": 0.3,
    },
    "infer/infer-medicine": {"split": None, "strategy": "self_consistency", **TINY_SEARCH},
    "refresh_reward/refresh-reward-medicine": {
        "mc_rollouts": 2,
        "mc_max_tokens": 8,
        "floor": 0.0,
        "train": {"max_steps": 1, "batch_size": 2, "max_length": 2048},
    },
    "finetune/finetune-medicine": {
        "curriculum": False,
        "max_rows": 4,
        "train": {
            "sft_max_steps": 1,
            "grpo_max_steps": 1,
            "num_generations": 2,
            "batch_size": 2,
            "max_completion_length": 8,
        },
    },
    "evaluate_promote/evaluate-promote-medicine": {
        "strategy": "cot",
        "width": 1,
        "max_tokens": 16,
        "gate": {"floor": 0.0, "first_baseline": "none"},  # plumbing: a random model
    },
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`ponder serve` on free ports with its own home; stopped (Ctrl-C) afterwards."""
    home = tmp_path_factory.mktemp("served")
    with serve(home, {}, ["--scheduler-seconds", "5"]) as env:
        yield env


def _runs(client: Any, deployment: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    dep = client.read_deployment_by_name(deployment)
    filt = DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
    return client.read_flow_runs(deployment_filter=filt)


def _logs(client: Any, run: Any) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    return "\n".join(f"{log.level} {log.message}" for log in logs[-40:])


def _wait_completed(
    client: Any, deployment: str, timeout: float, *, home: Path, **match: Any
) -> Any:
    """The first run of ``deployment`` (matching ``match`` attributes) to complete; a failed
    or crashed one fails the test with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in _runs(client, deployment):
            if any(getattr(run, k) != v for k, v in match.items()) or not run.state:
                continue
            if run.state.is_completed():
                return run
            if run.state.is_final():
                pytest.fail(f"{deployment} run {run.name} {run.state.type}:\n{_logs(client, run)}")
        time.sleep(3)
    diagnosis = _diagnosis(client, home)
    pytest.fail(f"no completed run of {deployment} within {timeout} s\n{diagnosis}")


def _diagnosis(client: Any, home: Path) -> str:
    """Every flow run with its deployment and state, and what the server logged against its
    SQLite store and its dead-letter queue (an event it failed to process lands there)."""
    names = {d.id: d.name for d in client.read_deployments()}
    runs = sorted(client.read_flow_runs(), key=lambda r: str(r.expected_start_time))
    lines = [f"{names.get(r.deployment_id)} {r.name} {r.state_name} {r.start_time}" for r in runs]
    log = home / "serve" / "prefect-server.log"
    if log.is_file():
        locked = log.read_text(errors="replace").count("database is locked")
        lines.append(f"server log: {locked} 'database is locked'")
    dlq = sorted(p.name for p in (home / "prefect" / "dlq").glob("*"))
    lines.append(f"dead letters: {dlq}")
    return "\n".join(lines)


def _shrink(client: Any) -> None:
    from prefect.client.schemas.actions import DeploymentUpdate

    for name, knobs in TINY.items():
        dep = client.read_deployment_by_name(name)
        params = {**dep.parameters["params"], **knobs}
        client.update_deployment(dep.id, DeploymentUpdate(parameters={"params": params}))


# Its own limit: the waits below add up to 2,160 s (server start 300, then 300 + 300 + 420 x 3
# for the stages), more than the suite's 600 s per test.
@pytest.mark.timeout(2700)
def test_the_loop_runs_on_real_servers(served, tiny_model, monkeypatch) -> None:
    from prefect.client.schemas.schedules import IntervalSchedule

    _register_tiny_base(tiny_model, served, monkeypatch)
    done = subprocess.run(
        [str(BIN / "ponder"), "deploy"], env=served, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with _client(served) as client:
        assert {d.name for d in client.read_deployments()} >= {n.split("/")[1] for n in TINY}
        _shrink(client)
        wait = partial(_wait_completed, client, home=Path(served["PONDER_HOME"]))
        # 1. a schedule fires: hourly from 20 s ahead, so that exactly one scheduled run is due
        # (a 10 s interval piled up to eight collect runs on the SQLite-backed server)
        collect = client.read_deployment_by_name("collect/collect-medicine")
        first = datetime.now(UTC) + timedelta(seconds=20)
        hourly = IntervalSchedule(interval=timedelta(hours=1), anchor_date=first)
        (schedule,) = client.create_deployment_schedules(collect.id, [(hourly, True)])
        scheduled = wait("collect/collect-medicine", 300, auto_scheduled=True)
        client.update_deployment_schedule(collect.id, schedule.id, active=False)
        # 2. batch scoring on demand: predictions (and the thought trees the RMs learn from)
        infer = client.read_deployment_by_name("infer/infer-medicine")
        run = client.create_flow_run_from_deployment(infer.id)
        wait("infer/infer-medicine", 300, id=run.id)
        # 3. the event collect emits on enough new feedback starts the chain
        _announce_feedback(served)
        wait("refresh_reward/refresh-reward-medicine", 420)
        wait("finetune/finetune-medicine", 420)
        evaluated = wait("evaluate_promote/evaluate-promote-medicine", 420)
        runs = client.read_flow_runs()
    unfinished = [r for r in runs if r.state and not r.state.is_final()]
    failed = [r for r in runs if r.state and r.state.is_final() and not r.state.is_completed()]
    assert not failed, [(r.name, r.state.type) for r in failed]
    assert all(r.state.is_scheduled() for r in unfinished), [r.state.type for r in unfinished]
    assert scheduled.auto_scheduled and evaluated.parameters["challenger"].startswith("models:/")
    _check_registry_and_lake(served, evaluated.parameters["challenger"])


def _announce_feedback(env: dict[str, str]) -> None:
    """What collect emits once enough feedback has arrived (tasks.events.announce)."""
    code = (
        "from tasks.events import FEEDBACK_READY, announce; "
        "announce(FEEDBACK_READY, 'medicine', new_rows=100, version='v00001')"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _check_registry_and_lake(env: dict[str, str], challenger: str) -> None:
    import mlflow

    from tasks.lake import Lake

    client = mlflow.MlflowClient(env["PONDER_TRACKING_URI"], env["PONDER_TRACKING_URI"])
    name, version = challenger.removeprefix("models:/").split("/")
    tags = client.get_model_version(name, version).tags
    assert tags["ponder.eval.decision"] in {"pass", "fail"}
    assert tags["ponder.eval.run_id"] and tags["ponder.dataset"].startswith("medicine/cases@")
    assert str(client.get_model_version_by_alias(name, "champion").version) == version  # floor 0
    lake = Lake(Path(env["PONDER_HOME"]) / "lake")
    assert lake.latest("medicine", "predictions") is not None

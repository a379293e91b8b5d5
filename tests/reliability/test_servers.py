"""The MLflow server dies mid-run: bounded retries with backoff, a clear failure, and
nothing partial in the registry. Two promotions at once: one wins, the other is refused."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import mlflow
import pytest

from flows.serve import free_port
from models.registry import model_name
from models.runs import orphaned
from tasks.lake import Lake
from tests.reliability.test_kill import _argv, _env, _finetune_params, _seed_cases
from tests.servers import mlflow_server, stop

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.reliability]


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"never reached {path.name}: {log.read_text()[-3000:]}")
        time.sleep(0.5)


def test_mlflow_down_before_registration(fresh_lake, tiny_model, tmp_path, record) -> None:
    lake = Lake(fresh_lake / "lake")
    _seed_cases(lake)
    port, store = free_port(), tmp_path / "store"
    store.mkdir()
    server = mlflow_server(store, port)
    uri = f"http://127.0.0.1:{port}"
    env = _env(
        lake.root,
        "registry.before_register=pause",
        PONDER_TRACKING_URI=uri,
        PONDER_FAILPOINT_DIR=str(tmp_path),
        PONDER_HOME=str(tmp_path / "home"),  # its own work folders: never resumes another run
    )
    argv = _argv("flows.finetune:finetune", _finetune_params(tiny_model))
    log = tmp_path / "finetune.log"  # a file, not a pipe: a full pipe would block the child
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(tmp_path / "registry.before_register.reached", proc, log, 400)
        stop(server)  # the tracking server dies while the run is open
        start = time.monotonic()
        (tmp_path / "registry.before_register.go").touch()
        proc.wait(timeout=300)
        waited = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    server = mlflow_server(store, port)  # back up: look at what landed
    try:
        client = mlflow.MlflowClient(uri, uri)
        versions = client.search_model_versions(f"name = '{model_name('medicine', 'policy')}'")
        exp = client.get_experiment_by_name("ponder")
        runs = client.search_runs([exp.experiment_id]) if exp else []
    finally:
        stop(server)
    assert proc.returncode != 0 and f"the MLflow server at {uri} is unreachable" in err
    assert waited < 120, f"gave up after {waited:.0f} s: retries must be bounded"
    assert versions == [], "nothing partial may land in the registry"
    assert [orphaned(r) for r in runs if r.info.run_name.startswith("finetune")] == [True]
    record("MLflow server down before registration", 1, int(not versions), len(versions))

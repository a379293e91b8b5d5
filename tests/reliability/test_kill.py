"""kill -9 in the middle of collect, infer, finetune and refresh_reward, then a rerun.

Each stage runs in its own Python process against the session's Prefect server and MLflow
store, exactly as a worker runs it. A failpoint (``domains.faults``) sends SIGKILL to that
process at a named moment: no handler runs, nothing is cleaned up. The rerun must finish
with no duplicated or lost rows, no half-registered model, and the killed MLflow run
marked FAILED and then resumed or linked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
import pytest

from domains.base import get_domain
from flows.pipeline import api_url
from models.registry import REGISTRATION_TAG, connect, model_name
from tasks.lake import Lake
from tasks.records import case_row, cases_frame

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.reliability]
DOMAIN = "medicine"
RUN = (
    "import json, sys\n"
    "from flows.options import flow_schema\nfrom flows.pipeline import load_ref\n"
    "fn = load_ref(sys.argv[1])\n"
    "out = fn(flow_schema(fn)(**json.loads(sys.argv[2])))\n"
)
KILLED = -signal.SIGKILL


def _env(lake: Path, fault: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a stage process: this test's lake, the session's servers."""
    env = {
        **os.environ,
        "PONDER_LAKE_ROOT": str(lake),
        "PONDER_BACKEND": "transformers",
        "PREFECT_API_URL": api_url(),
        **extra,
    }
    env.pop("PONDER_FAILPOINTS", None)
    if fault:
        env["PONDER_FAILPOINTS"] = fault
    return env


def _argv(ref: str, params: dict[str, Any]) -> list[str]:
    return [sys.executable, "-c", RUN, ref, json.dumps(params, default=str)]


def _flow(ref: str, params: dict[str, Any], lake: Path, fault: str | None = None):
    """Run one flow in a fresh process; ``fault`` arms a failpoint there."""
    env = _env(lake, fault)
    return subprocess.run(_argv(ref, params), env=env, capture_output=True, text=True, timeout=600)


def _infer_params(model: Path) -> dict[str, Any]:
    return {
        "domain": DOMAIN,
        "model": str(model),
        "strategy": "cot",
        "width": 1,
        "max_tokens": 16,
        "split": None,
        "shard_size": 2,
        "log_traces": 0,
    }


def _ok(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _seed_cases(lake: Lake, n: int = 6) -> list[str]:
    cases = get_domain(DOMAIN).generate(n, 5, difficulty=1)
    rows = [case_row(c, "test", 0.0, 0.0) for c in cases]
    for i, r in enumerate(rows):
        r["split"] = "train" if i % 2 == 0 else "eval"
    lake.write_version(DOMAIN, "cases", cases_frame(rows), ["test"])
    return [c.id for c in cases]


def test_kill_during_infer_resumes_without_duplicates(fresh_lake, tiny_model, record) -> None:
    lake = Lake(fresh_lake / "lake")
    ids = _seed_cases(lake, 8)
    params = _infer_params(tiny_model)
    killed = _flow("flows.infer:infer", params, lake.root, "infer.shard=kill@2")
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    runs = next((lake.root / DOMAIN / "predictions" / "_runs").iterdir())
    done_before = {p.name: p.stat().st_mtime_ns for p in runs.glob("shard-*.parquet")}
    nothing_committed = lake.latest(DOMAIN, "predictions") is None
    rerun = _flow("flows.infer:infer", params, lake.root)
    got = lake.scan(DOMAIN, "predictions").collect() if rerun.returncode == 0 else pl.DataFrame()
    lost = len(set(ids) - set(got["case_id"])) if got.height else len(ids)
    assert killed.returncode == KILLED and nothing_committed
    _ok(rerun)
    assert sorted(done_before) == ["shard-00000.parquet", "shard-00001.parquet"]
    again = {p.name: p.stat().st_mtime_ns for p in runs.glob("shard-*.parquet")}
    assert all(again[k] == v for k, v in done_before.items()), "finished shards are reused"
    assert got.height == len(ids) == got["case_id"].n_unique() and lost == 0
    record("kill -9 during infer (after shard 2 of 4)", 1, int(rerun.returncode == 0), lost)


def _inbox(home: Path, feedback_rows: int) -> None:
    cases = get_domain(DOMAIN).generate(5, 9)
    rows = [
        {"family": c.family, "inputs": json.dumps(c.inputs), "truth": json.dumps(c.truth)}
        for c in cases
    ]
    pl.DataFrame(rows).write_csv(home / "inbox" / "cases" / "drop.csv")
    pl.DataFrame(
        {
            "case_id": [cases[i % 5].id for i in range(feedback_rows)],
            "trace_id": [f"t{i}" for i in range(feedback_rows)],
            "reviewer_id": ["dr-a"] * feedback_rows,
            "timestamp": ["2026-11-30T09:00:00Z"] * feedback_rows,
            "kind": ["rating"] * feedback_rows,
            "rating": [str(1 + i % 5) for i in range(feedback_rows)],
        }
    ).write_csv(home / "inbox" / "feedback" / "ratings.csv")


@pytest.mark.parametrize("point", ["collect.committed", "lake.commit"])
def test_kill_during_collect_loses_and_repeats_nothing(fresh_lake, point, record) -> None:
    _inbox(fresh_lake, 12)
    lake = Lake(fresh_lake / "lake")
    params = {
        "domain": DOMAIN,
        "per_cell": 0,
        "sources": ["files"],
        "check_traces": False,
        "inbox": str(fresh_lake / "inbox"),
    }
    killed = _flow("flows.collect:collect", params, lake.root, f"{point}=kill")
    rerun = _flow("flows.collect:collect", params, lake.root)
    cases, feedback = (lake.scan(DOMAIN, d).collect() for d in ("cases", "feedback"))
    lost = (5 - cases["id"].n_unique()) + (12 - feedback["feedback_id"].n_unique())
    assert killed.returncode == KILLED
    _ok(rerun)
    assert lake.versions(DOMAIN, "cases") == lake.versions(DOMAIN, "feedback") == ["v00001"]
    assert cases.height == 5 and feedback.height == 12 and lost == 0  # no duplicates either
    assert not list((lake.root / DOMAIN).rglob(".tmp-*")), "staging folders are swept"
    assert not list((fresh_lake / "inbox" / "cases").glob("*.csv")), "inbox files processed"
    record(f"kill -9 during collect ({point})", 1, int(rerun.returncode == 0), lost)


def _versions(name: str) -> list[Any]:
    client = connect()
    try:
        return client.search_model_versions(f"name = '{name}'")
    except Exception:  # noqa: BLE001 (not registered yet)
        return []


def _finetune_params(tiny_model: Path) -> dict[str, Any]:
    return {
        "domain": DOMAIN,
        "base_model": str(tiny_model),
        "curriculum": False,
        "max_rows": 4,
        "train": {
            "sft_max_steps": 1,
            "grpo_max_steps": 2,
            "save_steps": 1,
            "num_generations": 2,
            "batch_size": 2,
            "max_completion_length": 8,
        },
    }


def test_kill_during_finetune_resumes_the_same_run(fresh_lake, tiny_model, record) -> None:
    lake = Lake(fresh_lake / "lake")
    _seed_cases(lake)
    name = model_name(DOMAIN, "policy")
    before = {v.version for v in _versions(name)}
    params = _finetune_params(tiny_model)
    killed = _flow("flows.finetune:finetune", params, lake.root, "finetune.checkpoint=kill@1")
    rerun = _flow("flows.finetune:finetune", params, lake.root)
    new = [v for v in _versions(name) if v.version not in before]
    assert killed.returncode == KILLED
    _ok(rerun)
    assert len(new) == 1 and new[0].tags[REGISTRATION_TAG] == "complete"
    run = mlflow.MlflowClient().get_run(new[0].run_id)
    parent = mlflow.MlflowClient().get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and parent.data.tags["ponder.attempts"] == "2"
    assert "ponder.killed" in parent.data.tags  # closed FAILED, then reopened and finished
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(parent.info.run_id, "loss")]
    assert max(steps) == 2
    lost = 2 - max(steps)  # training steps the resumed run did not reach
    record("kill -9 during finetune (after checkpoint 1)", 1, int(rerun.returncode == 0), lost)


def test_kill_mid_registration_leaves_no_half_registered_model(
    fresh_lake, tiny_model, record
) -> None:
    lake = Lake(fresh_lake / "lake")
    _seed_cases(lake)
    infer = {
        "domain": DOMAIN,
        "model": str(tiny_model),
        "strategy": "self_consistency",
        "width": 2,
        "max_tokens": 16,
        "split": None,
        "log_traces": 0,
    }
    _ok(_flow("flows.infer:infer", infer, lake.root))
    name = model_name(DOMAIN, "orm")
    before = {v.version for v in _versions(name)}
    params = {
        "domain": DOMAIN,
        "policy": str(tiny_model),
        "models": ["orm"],
        "floor": 0.0,
        "mc_rollouts": 0,
        "train": {"max_steps": 1, "batch_size": 2, "max_length": 2048},
    }
    killed = _flow(
        "flows.refresh_reward:refresh_reward", params, lake.root, "registry.registered=kill"
    )
    pending = [v for v in _versions(name) if v.version not in before]
    rerun = _flow("flows.refresh_reward:refresh_reward", params, lake.root)
    new = [v for v in _versions(name) if v.version not in before]
    assert killed.returncode == KILLED
    assert [v.tags[REGISTRATION_TAG] for v in pending] == ["pending"]
    _ok(rerun)
    assert len(new) == 1 and new[0].tags[REGISTRATION_TAG] == "complete"
    assert new[0].version != pending[0].version  # the half-registered one was deleted
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("ponder").experiment_id
    runs = client.search_runs(
        [exp],
        f"attributes.run_name = 'refresh-reward-{DOMAIN}'",
        order_by=["attributes.start_time DESC"],
        max_results=2,
    )
    latest, killed_run = runs
    assert killed_run.info.status == "FAILED" and "ponder.killed" in killed_run.data.tags
    assert latest.data.tags["ponder.resumes"] == killed_run.info.run_id
    half = sum(v.tags.get(REGISTRATION_TAG) != "complete" for v in new)
    record("kill -9 during refresh_reward (mid-registration)", 1, int(rerun.returncode == 0), half)

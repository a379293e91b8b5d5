"""A reviewer's step label reaches the PRM, on a real `mlflow server` (loopback):

1. infer scores six cases and fills the domain's review queue;
2. reviewers label queued traces through the REST call the MLflow UI makes (POST
   ``ajax-api/3.0/mlflow/traces/{id}/assessments`` with the step span's ``span_id``), give an
   overall verdict, and mark their queue items done;
3. collect reads the labels into the feedback dataset, the reviewer's id as the source;
4. refresh_reward trains the PRM on them (reviewer labels only: no Monte-Carlo rollouts);
5. a step a second reviewer then marks as the first wrong one scores lower under the
   refreshed PRM than under the PRM before that label.

The tiny random model writes the paths (one step each: it never writes the blank line that
ends a step); the labels, not the text, carry the signal.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from domains.base import get_domain
from flows.collect import CollectParams, collect
from flows.infer import InferParams, infer
from flows.refresh_reward import RefreshParams, refresh_reward
from flows.serve import free_port
from models.reward import RMTrainConfig
from tasks.lake import Lake
from tasks.records import case_row, cases_frame
from tests.servers import mlflow_server, stop

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]
DOMAIN = "medicine"
SPLITS = ["train", "train", "train", "train", "eval", "eval"]


@pytest.fixture
def server(fresh_lake: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An `mlflow server` of this test's own; ponder points at it through its settings."""
    from models.registry import connect
    from models.settings import get_settings

    root = fresh_lake / "mlflow"
    root.mkdir()
    port = free_port()
    proc = mlflow_server(root, port)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("PONDER_TRACKING_URI", url)
    get_settings.cache_clear()
    connect()
    try:
        yield url
    finally:
        stop(proc)
        monkeypatch.delenv("PONDER_TRACKING_URI")
        get_settings.cache_clear()
        connect()  # the session's store again, for the tests after this one


def _assess(url: str, trace_id: str, name: str, value: Any, who: str, span: str | None) -> None:
    """What the MLflow UI sends when a reviewer adds feedback to a trace or one of its spans."""
    body = {
        "assessment": {
            "assessment_name": name,
            "trace_id": trace_id,
            "source": {"source_type": "HUMAN", "source_id": who},
            "feedback": {"value": value},
            **({"span_id": span} if span else {}),
        }
    }
    req = urllib.request.Request(
        f"{url}/ajax-api/3.0/mlflow/traces/{trace_id}/assessments",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as reply:
        assert reply.status == 200, reply.read()


def _step_spans(trace_id: str) -> list[str]:
    """The trace's step span ids, step 1 first."""
    import mlflow

    spans = [s for s in mlflow.get_trace(trace_id).data.spans if s.name.startswith("step ")]
    return [s.span_id for s in sorted(spans, key=lambda s: int(s.name.split()[1]))]


def _seed(lake: Lake, policy: Path) -> dict[str, tuple[str, str]]:
    """Six cases (four train, two eval) and one infer run; trace id -> (case id, split)."""
    from models.redaction import redactor

    cases = get_domain(DOMAIN).generate(6, 5, difficulty=1)
    rows = [
        case_row(c, "test", 0.0, 0.0) | {"split": s} for c, s in zip(cases, SPLITS, strict=True)
    ]
    lake.write_version(DOMAIN, "cases", cases_frame(rows), ["test"])
    ran = infer(
        InferParams(
            domain=DOMAIN,
            input="lake:cases",
            split=None,
            model=str(policy),
            strategy="beam",
            width=2,
            max_tokens=96,
            step_tokens=16,
            max_depth=3,
            dtype="float32",
            max_model_len=2048,
            log_traces=6,
            review_k=6,
        )
    )
    assert ran.queued == 6, ran
    import mlflow

    refs = {redactor(DOMAIN).case_ref(r["id"]): (r["id"], r["split"]) for r in rows}
    exp = mlflow.get_experiment_by_name("ponder-traces").experiment_id
    traces = mlflow.search_traces(locations=[exp], return_type="list", include_spans=False)
    return {t.info.trace_id: refs[t.info.tags["ponder.case_ref"]] for t in traces}


def _refresh(tiny_model: Path) -> Any:
    cfg = RMTrainConfig(max_steps=40, batch_size=4, learning_rate=3e-3, max_length=2048)
    return refresh_reward(
        RefreshParams(
            domain=DOMAIN,
            policy=str(tiny_model),
            backbone=str(tiny_model),
            models=["prm"],
            mc_rollouts=0,
            floor=0.0,  # plumbing: a random backbone
            dtype="float32",
            max_model_len=2048,
            train=cfg,
        )
    )


def _collect(fresh_lake: Path) -> Any:
    return collect(
        CollectParams(
            domain=DOMAIN,
            per_cell=0,
            sources=["mlflow_feedback"],
            inbox=fresh_lake / "inbox",
            check_traces=True,
        )
    )


def _values(version: str, case_id: str, trace_id: str) -> list[float]:
    """The PRM version's value after each step of the trace's path."""
    from models.prm import ProcessRM
    from models.registry import download_model, model_name
    from tasks.context import StageContext
    from tasks.reward import load_cases
    from tasks.reward_data import trace_completions

    case = load_cases(StageContext.open(DOMAIN))[0][case_id]
    rm = ProcessRM(download_model(f"models:/{model_name(DOMAIN, 'prm')}/{version}"))
    steps = trace_completions([trace_id])[trace_id]
    return rm.values([rm.encode(get_domain(DOMAIN).prompt(case), steps)])[0]


def test_a_reviewers_step_label_lowers_that_steps_prm_value(
    server: str, fresh_lake: Path, tiny_model: Path, vllm_engine: object
) -> None:
    from mlflow.genai import review_queues as rq

    from models.registry import TRACE_EXPERIMENT, ensure_experiment
    from tasks.review import queue_status

    lake = Lake(fresh_lake / "lake")
    traces = _seed(lake, tiny_model)
    train = sorted(t for t, (_, split) in traces.items() if split == "train")
    held = sorted(t for t, (_, split) in traces.items() if split == "eval")
    assert len(train) == 4 and len(held) == 2 and all(_step_spans(t) for t in traces)
    (queue,) = queue_status(DOMAIN)
    assert queue.pending == 6 and queue.url is not None and queue.url.startswith(server)
    experiment = ensure_experiment(TRACE_EXPERIMENT)
    queue_id = rq.get_review_queue(name=DOMAIN, experiment_id=experiment).queue_id

    # round A: one reviewer passes two train paths and judges both held-out ones
    for trace, value in [
        (train[0], "correct"),
        (train[1], "correct"),
        *zip(held, ["correct", "wrong"], strict=True),
    ]:
        for span in _step_spans(trace):
            _assess(server, trace, "step", value, "ana", span)
        _assess(server, trace, "verdict", value, "ana", None)
        rq.set_review_queue_item_status(
            queue_id, item_id=trace, status="complete", completed_by="ana"
        )
    assert _collect(fresh_lake).feedback.valid == 8  # four step paths and four verdicts
    before = _refresh(tiny_model)
    assert before.prm is not None and before.prm.decision == "promoted", before
    assert before.counts["step_paths_reviewer"] == 4

    # round B: a second reviewer finds the step where a third train path went wrong
    labelled_at = time.monotonic()
    target, case_id = train[2], traces[train[2]][0]
    first_wrong = len(_step_spans(target))  # the last step (the tiny model's paths are short)
    _assess(server, target, "first_wrong_step", True, "bo", _step_spans(target)[first_wrong - 1])
    _assess(server, target, "verdict", "wrong", "bo", None)
    rq.set_review_queue_item_status(queue_id, item_id=target, status="complete", completed_by="bo")
    got = _collect(fresh_lake)
    after = _refresh(tiny_model)
    took = time.monotonic() - labelled_at
    assert got.feedback.valid == 2 and after.prm is not None and after.prm.version
    assert after.counts["step_paths_reviewer"] == 5

    rows = lake.scan(DOMAIN, "feedback").filter(pl.col("trace_id") == target).collect()
    # every step of the path labelled (the first-wrong mark on its last one): one step_labels row
    (step,) = rows.filter(pl.col("kind") == "step_labels").iter_rows(named=True)
    assert (step["reviewer_id"], step["case_id"]) == ("bo", case_id)
    assert step["step_labels"] == "1" * (first_wrong - 1) + "0"
    assert rows.filter(pl.col("kind") == "thumbs")["thumbs"].to_list() == [False]
    old = _values(before.prm.version, case_id, target)[first_wrong - 1]
    new = _values(after.prm.version, case_id, target)[first_wrong - 1]
    assert new < old, (old, new)
    (done,) = queue_status(DOMAIN)
    assert (done.pending, done.complete, done.by_reviewer) == (1, 5, {"ana": 4, "bo": 1})
    logging.getLogger(__name__).warning(  # shown in pytest's summary of captured logs
        "label -> refreshed PRM v%s: %.1f s; step %d value %.3f -> %.3f",
        after.prm.version,
        took,
        first_wrong,
        old,
        new,
    )

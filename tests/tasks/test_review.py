"""The review queue: which cases go first, and filling MLflow's queue (the session's SQLite
tracking store, which keeps review queues like a server does)."""

from __future__ import annotations

import logging

import polars as pl
import pytest

from models.search.tree import ThoughtTree
from tasks.review import disagreement, fill_review_queue, needs_review, queue_items


def _tree(*answers: str) -> ThoughtTree:
    tree = ThoughtTree(prompt_token_ids=[1])
    for a in answers:
        tree.add(tree.root, text=a, terminal=True, answer=a)
    return tree


def test_wrong_first_then_disagreement_then_low_confidence() -> None:
    frame = pl.DataFrame(
        {
            "case_id": ["sure", "split", "wrong", "unsure"],
            "answer": ["4", "4", "4", "4"],
            "correct": [True, None, False, None],
            "confidence": [0.9, 0.8, 0.95, 0.2],
        }
    )
    trees = {"split": _tree("4", "5", "6"), "sure": _tree("4", "4")}
    assert disagreement(trees["split"], "4") == pytest.approx(2 / 3)
    assert disagreement(None, "4") == 0.0
    assert needs_review(frame, trees, k=3) == ["wrong", "split", "unsure"]
    assert needs_review(frame, trees, k=0) == []


def _traces(n: int) -> dict[str, str]:
    import mlflow

    from models.registry import TRACE_EXPERIMENT, ensure_experiment

    ensure_experiment(TRACE_EXPERIMENT)
    out = {}
    for k in range(n):
        with mlflow.start_span(name=f"case {k}") as span:
            out[f"c{k}"] = span.trace_id  # not the last active trace: that is process-wide
    assert len(set(out.values())) == n
    return out


def test_the_domains_queue_is_made_once_and_filled_idempotently() -> None:
    from tasks.context import StageContext

    ctx = StageContext.open("medicine")
    traces, more = _traces(3), _traces(1)
    first = fill_review_queue.fn(ctx, traces=traces)
    assert first is not None and first.queue == "medicine" and first.added == 3
    again = fill_review_queue.fn(ctx, traces=traces | more)  # the 3 again, and 1 new
    assert again is not None and again.queue_id == first.queue_id and again.added == 1
    assert set(queue_items(first.queue_id)) >= set(traces.values()) | set(more.values())


def test_a_server_without_queues_warns_and_names_the_fix(monkeypatch, caplog) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.genai import review_queues

    from tasks.context import StageContext

    def missing(*_: object, **__: object) -> None:  # what an MLflow server < 3.14 answers
        raise MlflowException("Endpoint not found", error_code="ENDPOINT_NOT_FOUND")

    monkeypatch.setattr(review_queues, "get_review_queue", missing)
    with caplog.at_level(logging.WARNING, logger="tasks.review"):
        assert fill_review_queue.fn(StageContext.open("medicine"), traces=_traces(1)) is None
    assert "mlflow server" in caplog.text and "results are saved" in caplog.text


def test_ponder_review_counts_pending_and_done_by_reviewer() -> None:
    from mlflow.genai import review_queues as rq
    from typer.testing import CliRunner

    from flows.cli import app
    from tasks.context import StageContext
    from tasks.review import queue_status

    filled = fill_review_queue.fn(StageContext.open("finance_risk"), traces=_traces(3))
    assert filled is not None
    done, declined = list(queue_items(filled.queue_id))[:2]
    rq.set_review_queue_item_status(
        filled.queue_id, item_id=done, status="complete", completed_by="ana"
    )
    rq.set_review_queue_item_status(
        filled.queue_id, item_id=declined, status="declined", completed_by="bo"
    )
    (status,) = queue_status("finance_risk")
    assert (status.pending, status.complete, status.declined) == (1, 1, 1)
    assert status.by_reviewer == {"ana": 1} and status.url is None  # SQLite: no UI address
    shown = CliRunner().invoke(app, ["review", "--domain", "finance_risk"])
    assert shown.exit_code == 0, shown.output
    assert "finance_risk" in shown.output and "ana 1" in shown.output

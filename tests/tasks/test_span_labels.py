"""A reviewer's labels on step spans become feedback rows; unusable ones are quarantined
with a reason. The last test writes real assessments to the session's MLflow store."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.entities import AssessmentSource

from tasks.span_labels import span_label_rows

# traces of their own: collect tests read every trace of ponder-traces in the session store
EXPERIMENT = "test-span-labels"


def _trace(steps: int) -> tuple[str, dict[int, str], str]:
    """A real trace shaped like log_traces': a case span, then 'step k' spans, each with a
    'calc' child. Returns (trace id, step -> span id, a calc span's id)."""
    from models.registry import ensure_experiment

    ensure_experiment(EXPERIMENT)
    ids = {}
    with mlflow.start_span(name="case ref-1") as root:
        for k in range(1, steps + 1):
            with mlflow.start_span(name=f"step {k}") as span:
                ids[k] = span.span_id
                with mlflow.start_span(name="calc") as calc:
                    calc_id = calc.span_id
    return root.trace_id, ids, calc_id


def _label(trace_id: str, span_id: str, value: object, who: str, name: str = "step") -> None:
    source = AssessmentSource(source_type="HUMAN", source_id=who)
    mlflow.log_feedback(trace_id=trace_id, name=name, value=value, source=source, span_id=span_id)


def _read(trace_id: str) -> tuple[list[dict], list[dict]]:
    trace = mlflow.get_trace(trace_id)
    labels = [a for a in trace.info.assessments if a.span_id]
    return span_label_rows(trace, labels, case_id="c1")


def test_every_step_labelled_is_a_label_string_per_reviewer() -> None:
    trace_id, steps, _ = _trace(3)
    for k, value in ((1, "correct"), (2, "wrong"), (3, True)):
        _label(trace_id, steps[k], value, "ana")
    _label(trace_id, steps[2], "correct", "bo")  # a second reviewer, one step: no wrong step
    rows, bad = _read(trace_id)
    assert [(r["reviewer_id"], r["kind"], r["step_labels"]) for r in rows] == [
        ("ana", "step_labels", "101")
    ]
    assert rows[0]["case_id"] == "c1" and rows[0]["trace_id"] == trace_id
    assert [b["reason"] for b in bad] == [
        "span labels on 1 of 3 steps, none wrong: label every step, or mark the first wrong one"
    ]


def test_a_first_wrong_mark_and_labels_on_other_spans() -> None:
    trace_id, steps, calc = _trace(4)
    _label(trace_id, steps[3], True, "ana", name="first_wrong_step")
    _label(trace_id, calc, "wrong", "ana")  # a calculator span is not a step
    _label(trace_id, steps[1], "maybe", "ana")  # neither correct nor wrong
    rows, bad = _read(trace_id)
    assert [(r["kind"], r["first_wrong_step"]) for r in rows] == [("first_wrong_step", "3")]
    reasons = sorted(b["reason"] for b in bad)
    assert reasons[0].startswith("span label 'step' on span 'calc', not a step")
    assert reasons[1] == "step label 'maybe' is not correct or wrong"


@pytest.mark.parametrize("labels", [[], [(1, "wrong")]])
def test_the_collect_reader_picks_span_labels_up(labels: list) -> None:
    from tasks.collect import feedback_from_mlflow
    from tasks.context import StageContext

    trace_id, steps, _ = _trace(2)
    mlflow.MlflowClient().set_trace_tag(trace_id, "ponder.domain", "medicine")
    for k, value in labels:
        _label(trace_id, steps[k], value, "ana")
    frame, bad, _, seen = feedback_from_mlflow.fn(
        StageContext.open("medicine"), experiment=EXPERIMENT, watermark_ms=0
    )
    assert trace_id in seen and not [b for b in bad if b["source"].endswith(trace_id)]
    mine = frame.filter(frame["trace_id"] == trace_id)
    assert mine["kind"].to_list() == (["first_wrong_step"] if labels else [])

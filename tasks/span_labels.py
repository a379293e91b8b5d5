"""Step labels a reviewer leaves on a trace's step spans, turned into feedback rows.

Each case's trace has one span per step of the chosen path, named ``step 1``, ``step 2``, ...
(``tasks.tracking.log_traces``). A reviewer labels a step with an assessment on that span
(the MLflow UI's span view, or ``log_feedback(span_id=...)``):

- ``step``: ``correct`` / ``wrong`` (or true / false): the step is right or wrong;
- ``first_wrong_step`` (any value): this is the first step that went wrong.

Per trace and reviewer the labels become one feedback row, the reviewer's id as its source:

- every step labelled -> ``step_labels`` ("1101");
- else the first step marked wrong or first-wrong, with no earlier step labelled wrong ->
  ``first_wrong_step`` (the steps before it count as right, the reviewer's convention);
- otherwise nothing usable: a reason is recorded in the quarantine.

A label on a span that is not a step is quarantined with its span's name. Disagreeing
reviewers are resolved later, by rule, where the PRM's targets are built
(``tasks.reward_data.reviewer_steps``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

STEP_SPAN = re.compile(r"^step (\d+)$")
STEP_KINDS = ("step", "first_wrong_step")
RIGHT = {"correct", "true", "1", "right", "yes"}
WRONG = {"wrong", "false", "0", "incorrect", "no"}


def stamp_ms(a: Any) -> int:
    """An assessment's last change, in ms since the epoch (0 when MLflow has none)."""
    return int(a.last_update_time_ms or a.create_time_ms or 0)


def is_span_label(a: Any) -> bool:
    """Whether an assessment labels one span (not the whole trace)."""
    return bool(getattr(a, "span_id", None)) and getattr(a, "feedback", None) is not None


def span_label_rows(
    trace: Any, labels: list[Any], *, case_id: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(feedback rows, quarantine rows) for one trace's span-level assessments. ``trace``
    must carry its spans (``mlflow.get_trace``)."""
    steps = {s.span_id: int(m.group(1)) for s in trace.data.spans if (m := STEP_SPAN.match(s.name))}
    names = {s.span_id: s.name for s in trace.data.spans}
    n = len(steps)
    rows, bad = [], []
    by_reviewer: dict[str | None, dict[int, bool]] = {}
    marks: dict[str | None, list[Any]] = {}
    for a in labels:
        if a.span_id not in steps or a.name not in STEP_KINDS:
            reason = (
                f"span label {a.name!r} on span {names.get(a.span_id, a.span_id)!r}, not a step: "
                f"label a 'step N' span with {' or '.join(STEP_KINDS)}"
            )
            bad.append(_reject(trace, a, reason))
            continue
        who = a.source.source_id if a.source else None
        marks.setdefault(who, []).append(a)
        ok = _verdict(a)
        if ok is None:
            bad.append(_reject(trace, a, f"step label {a.value!r} is not correct or wrong"))
            continue
        by_reviewer.setdefault(who, {})[steps[a.span_id]] = ok
    for who, labelled in by_reviewer.items():
        row = _row(trace, marks[who], who=who, case_id=case_id, labelled=labelled, n=n)
        if isinstance(row, str):
            bad.append(_reject(trace, marks[who][0], row))
        else:
            rows.append(row)
    return rows, bad


def _verdict(a: Any) -> bool | None:
    """True = right, False = wrong; a first-wrong mark is a wrong step whatever its value."""
    return False if a.name == "first_wrong_step" else is_right(a.value)


def is_right(value: Any) -> bool | None:
    """A reviewer's correct / wrong (or true / false, yes / no) as a bool; None if neither."""
    text = str(value).strip().lower()
    return True if text in RIGHT else False if text in WRONG else None


def _row(
    trace: Any, marks: list[Any], *, who: str | None, case_id: str | None, labelled: dict, n: int
) -> dict[str, Any] | str:
    """One reviewer's labels on one trace as a feedback row, or why they are not usable."""
    wrong = sorted(k for k, ok in labelled.items() if not ok)
    stamp = max(stamp_ms(a) for a in marks)
    ids = sorted(a.assessment_id for a in marks)
    row: dict[str, Any] = {
        "feedback_id": "spans-" + hashlib.sha256("|".join(ids).encode()).hexdigest()[:24],
        "trace_id": trace.info.trace_id,
        "case_id": case_id,
        "reviewer_id": who,
        "timestamp": dt.datetime.fromtimestamp(stamp / 1000, dt.UTC).isoformat(),
        "rationale": f"span labels on {len(labelled)} of {n} steps",
    }
    if len(labelled) == n:
        return row | {"kind": "step_labels", "step_labels": "".join(
            "1" if labelled[k] else "0" for k in range(1, n + 1))}  # fmt: skip
    if wrong:
        return row | {"kind": "first_wrong_step", "first_wrong_step": str(wrong[0])}
    return (
        f"span labels on {len(labelled)} of {n} steps, none wrong: label every step, or mark "
        "the first wrong one"
    )


def _reject(trace: Any, a: Any, reason: str) -> dict[str, Any]:
    return {
        "row": None,
        "source": f"mlflow:{trace.info.trace_id}",
        "reason": reason,
        "raw": str(a.assessment_id),
    }

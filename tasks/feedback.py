"""Writing reviewer feedback onto MLflow traces, the same way the MLflow UI does.

Values are parsed as JSON when they look like it ("4" -> 4, "true" -> True, "{...}" ->
dict), the trace must exist, and the assessment source is the human reviewer. A
rationale and any text in the value are masked before they reach the tracking store: a
reviewer quoting the note ("Mr. Lee's potassium...") must not put the name outside the lake.
"""

from __future__ import annotations

import json
from typing import Any

from domains.errors import PonderError
from tasks.records import FEEDBACK_KINDS


def parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def log_feedback(
    trace_id: str, name: str, value: str, reviewer: str, rationale: str | None = None
) -> str:
    """Log one feedback assessment; returns its assessment id."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    from models.redaction import redactor
    from models.registry import connect

    if name not in FEEDBACK_KINDS:
        raise PonderError("name", f"unknown feedback kind {name!r}", f"use one of {FEEDBACK_KINDS}")
    if not reviewer.strip():
        raise PonderError("reviewer", "reviewer id is empty", "pass --reviewer YOUR_ID")
    connect()
    if mlflow.get_trace(trace_id, silent=True) is None:
        raise PonderError(
            "trace_id",
            f"no trace {trace_id!r} in the tracking store",
            "copy the id from the MLflow UI (Traces tab) or `mlflow.search_traces`",
        )
    source = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=reviewer)
    red = redactor()  # every domain's detectors: the trace's domain is not known here
    assessment = mlflow.log_feedback(
        trace_id=trace_id,
        name=name,
        value=red.value(parse_value(value)),
        source=source,
        rationale=red.text(rationale) if rationale else rationale,
    )
    return assessment.assessment_id

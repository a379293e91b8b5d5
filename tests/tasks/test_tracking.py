"""The report's links into the MLflow UI."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasks.tracking import TRACE_EXPERIMENT, trace_links


@pytest.mark.parametrize(
    ("uri", "linked"), [("http://127.0.0.1:5000/", True), ("sqlite:///m.db", False)]
)
def test_cases_link_to_their_trace_only_on_a_server(monkeypatch, uri: str, linked: bool) -> None:
    import mlflow

    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: uri)
    experiments = {TRACE_EXPERIMENT: SimpleNamespace(experiment_id="7")}
    monkeypatch.setattr(mlflow, "get_experiment_by_name", experiments.get)
    links = trace_links({"c1": "tr-1", "c2": None})  # c2's trace was not logged
    if not linked:
        assert links == {}
        return
    assert links == {
        "c1": "http://127.0.0.1:5000/#/experiments/7/traces?selectedEvaluationId=tr-1&traceId=tr-1"
    }

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


def test_a_version_is_paged_with_its_trees_lined_up(tmp_path) -> None:
    """iter_pages streams a version in pages of exactly ``size`` rows across row groups,
    with each page's trees; trees stored in another order are looked up by case id."""
    import polars as pl

    from tasks.tracking import iter_pages

    ids = [f"c{i}" for i in range(7)]
    pl.DataFrame({"case_id": ids, "text": ids}).write_parquet(
        tmp_path / "part-00000.parquet", row_group_size=3
    )
    pl.DataFrame({"case_id": ids, "tree": ids}).write_parquet(
        tmp_path / "trees.parquet", row_group_size=2
    )
    pages = list(iter_pages(tmp_path, 3))
    assert [p["case_id"].to_list() for p, _ in pages] == [ids[:3], ids[3:6], ids[6:]]
    assert all(p["case_id"].to_list() == t["case_id"].to_list() for p, t in pages)
    pl.DataFrame({"case_id": ids[::-1], "tree": ids[::-1]}).write_parquet(
        tmp_path / "trees.parquet"
    )
    pages = list(iter_pages(tmp_path, 3))
    assert all(sorted(p["case_id"]) == sorted(t["case_id"]) for p, t in pages)


def test_stored_masks_are_reused_only_under_the_same_redactor() -> None:
    """A shard's masks serve a redactor with the same key and detectors; masks made under
    another fingerprint, and trees stored before masks were kept, are masked again."""
    import polars as pl

    from tasks.tracking import stored_masks

    rows = pl.DataFrame(
        {
            "case_id": ["a", "b"],
            "tree": ["{}", "{}"],
            "masked": ['{"k1": "[NAME-x]"}', '{"k2": null}'],
            "masked_by": ["fp1", "fp2"],
        }
    )
    assert stored_masks(rows, "fp1") == {"a": {"k1": "[NAME-x]"}}
    assert stored_masks(rows, "fp3") == {}
    assert stored_masks(rows.select("case_id", "tree"), "fp1") == {}

"""The generator source of collect: families, difficulty levels and case filters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from domains.base import get_domain
from domains.errors import PonderError
from tasks.collect import from_generator
from tasks.context import StageContext


def _generated(domain: str, **kwargs: Any) -> Any:
    """``from_generator`` with seed 0, everything in train, and the given knobs."""
    defaults = {"per_cell": 1, "seed": 0, "train": 1.0, "eval_": 0.0}
    return from_generator.fn(StageContext.open(domain), **(defaults | kwargs))


def test_a_case_filter_keeps_only_matching_cases_at_the_asked_levels() -> None:
    where = {"calculator": ["anion_gap", "bmi"]}
    batch = _generated("medicine", per_cell=3, difficulties=[1, 2], where=where)
    assert len(batch.rows) == 6 and batch.rows_in == 6
    assert {r["difficulty"] for r in batch.rows} == {1, 2}
    assert {json.loads(r["inputs"])["calculator"] for r in batch.rows} <= {"anion_gap", "bmi"}
    unfiltered = get_domain("medicine").generate(40, 0, difficulty=1)
    assert len({c.inputs["calculator"] for c in unfiltered}) > 2  # the filter did the work
    assert "where=" in batch.sources[0]


def test_families_pick_a_subset_of_the_domain() -> None:
    batch = _generated("finance_risk", per_cell=2, families=["structuring"])
    assert {r["family"] for r in batch.rows} == {"structuring"} and len(batch.rows) == 10


@pytest.mark.parametrize(
    ("kwargs", "field", "fix"),
    [
        ({"where": {"calc": ["bmi"]}}, "where", "'calculator'"),
        ({"where": {"calculator": ["bmx"]}}, "where", "anion_gap"),
        ({"where": {"calculator": []}}, "where", "at least one"),
        ({"families": ["nope"]}, "family", "clinical_calc"),
    ],
)
def test_bad_filters_name_the_field_and_the_valid_values(kwargs, field, fix) -> None:
    with pytest.raises(PonderError) as err:
        _generated("medicine", **kwargs)
    assert err.value.field == field and fix in err.value.fix


def test_free_path_never_returns_a_taken_name(tmp_path) -> None:
    from tasks.collect import free_path

    target = tmp_path / "fb.csv"
    assert free_path(target) == target
    target.write_text("pending")
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere")
    names = {free_path(target) for _ in range(50)} | {free_path(tmp_path / "dangling.csv")}
    assert len(names) == 51 and all(not p.exists() for p in names)
    assert all(p.suffix == ".csv" and p.name.startswith(("fb-", "dangling-")) for p in names)


@pytest.mark.parametrize(
    ("value", "thumbs"), [("correct", "true"), ("Wrong", "false"), ("meh", "meh")]
)
def test_a_trace_verdict_reads_as_thumbs(value: str, thumbs: str) -> None:
    """The reviewer's overall call ("verdict": correct / wrong) is a thumbs row; any other
    value stays as written, so validation quarantines it with its reason."""
    from types import SimpleNamespace

    from tasks.collect import assessment_row

    trace = SimpleNamespace(info=SimpleNamespace(trace_id="tr-1", tags={"ponder.case_id": "c1"}))
    a = SimpleNamespace(
        name="verdict",
        value=value,
        assessment_id="a-1",
        rationale=None,
        source=SimpleNamespace(source_id="ana"),
    )
    row = assessment_row(trace, a, 0)
    assert (row["kind"], row["thumbs"], row["case_id"]) == ("thumbs", thumbs, "c1")

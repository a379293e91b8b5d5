"""Reward data builders on 3-row frames: sources, contradictions, step labels, lengths."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from domains.base import get_domain
from tasks import reward_data as rd
from tasks.reward import gate, tokenize_pairs

D = get_domain("medicine")
CASES = {c.id: c for c in D.generate(3, 2, difficulty=1)}
IDS = list(CASES)


def _fb(rows: list[dict]) -> pl.DataFrame:
    cols = (
        "kind",
        "case_id",
        "trace_id",
        "rating",
        "thumbs",
        "chosen",
        "rejected",
        "first_wrong_step",
        "step_labels",
        "reviewer_id",
        "timestamp",
    )
    return pl.DataFrame(
        [{c: r.get(c) for c in cols} for r in rows],
        schema_overrides={"rating": pl.Int8, "thumbs": pl.Boolean, "first_wrong_step": pl.Int32},
    )


def test_rating_pairs_use_the_gap_as_margin() -> None:
    index = {"a": ["x\n\n", "y"], "b": ["z"], "c": ["w"]}
    fb = _fb(
        [
            {"kind": "rating", "case_id": IDS[0], "trace_id": "a", "rating": 5},
            {"kind": "rating", "case_id": IDS[0], "trace_id": "b", "rating": 2},
            {"kind": "thumbs", "case_id": IDS[0], "trace_id": "c", "thumbs": False},
            {"kind": "rating", "case_id": IDS[0], "trace_id": "nope", "rating": 1},
        ]
    )
    pairs, bad = rd.rating_pairs(fb, CASES, index, margin_per_point=0.5)
    got = {(p["chosen"], p["rejected"]): p["margin"] for p in pairs}
    assert got == {("x\n\ny", "z"): 1.5, ("x\n\ny", "w"): 2.0, ("z", "w"): 0.5}
    assert len(bad) == 1 and "unknown trace" in bad[0]["reason"]


def test_contradictions_majority_and_ties() -> None:
    def p(c, r, cid=IDS[0]):
        return {
            "case_id": cid,
            "family": "x",
            "chosen": c,
            "rejected": r,
            "source": "explicit",
            "margin": 0.0,
        }

    kept, bad = rd.resolve_contradictions(
        [p("A", "B"), p("A", "B"), p("B", "A"), p("C", "D"), p("D", "C"), p("E", "F")]
    )
    assert sorted((k["chosen"], k["rejected"]) for k in kept) == [
        ("A", "B"),
        ("A", "B"),
        ("E", "F"),
    ]
    reasons = sorted(b["reason"].split(" ")[0] for b in bad)
    assert reasons == ["contradictory", "contradictory", "outvoted"]


def test_reviewer_step_labels() -> None:
    index = {t: ["s1\n\n", "s2\n\n", "s3"] for t in ("t1", "t2", "t3")}
    fb = _fb(
        [
            {
                "kind": "first_wrong_step",
                "case_id": IDS[1],
                "trace_id": "t1",
                "first_wrong_step": 2,
            },
            {"kind": "step_labels", "case_id": IDS[1], "trace_id": "t2", "step_labels": "110"},
            {"kind": "step_labels", "case_id": IDS[1], "trace_id": "t3", "step_labels": "11"},
        ]
    )
    rows, bad = rd.reviewer_steps(fb, CASES, index)
    assert [r["targets"] for r in rows] == [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    assert len(bad) == 1 and "3 steps" in bad[0]["reason"]


def test_reviewers_are_resolved_by_rule_and_never_double_counted() -> None:
    """One path per trace: a reviewer's newer labels replace older ones, and disagreeing
    reviewers merge with a step any of them calls wrong counted wrong; each is recorded."""
    index = {"t": ["s1\n\n", "s2\n\n", "s3"]}
    label = {"kind": "step_labels", "case_id": IDS[1], "trace_id": "t"}
    fb = _fb(
        [
            label | {"reviewer_id": "ana", "timestamp": "2026-01-01", "step_labels": "000"},
            label | {"reviewer_id": "ana", "timestamp": "2026-01-02", "step_labels": "110"},
            label | {"reviewer_id": "bo", "timestamp": "2026-01-01", "step_labels": "101"},
        ]
    )
    rows, bad = rd.reviewer_steps(fb, CASES, index)
    assert [r["targets"] for r in rows] == [[1.0, 0.0, 0.0]]
    reasons = sorted(b["reason"] for b in bad)
    assert reasons[0] == "replaced by the same reviewer's newer labels"
    assert (
        reasons[1:] == ["reviewers disagree: merged, a step any reviewer calls wrong is wrong"] * 2
    )
    agree = _fb([label | {"reviewer_id": who, "step_labels": "110"} for who in ("ana", "bo")])
    rows, bad = rd.reviewer_steps(agree, CASES, index)
    assert [r["targets"] for r in rows] == [[1.0, 1.0, 0.0]] and bad == []


def test_weights_resample_by_source() -> None:
    pairs = [{"source": "explicit"}] * 100 + [{"source": "verifier"}] * 100
    out = rd.weighted(pairs, {"explicit": 2.0, "verifier": 0.5}, seed=0)
    n_exp = sum(p["source"] == "explicit" for p in out)
    n_ver = len(out) - n_exp
    assert n_exp == 200 and 30 < n_ver < 70


def test_too_long_pairs_are_reported_not_dropped(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    case = CASES[IDS[2]]
    pairs = [
        {
            "case_id": case.id,
            "family": case.family,
            "chosen": case.reference,
            "rejected": "x",
            "source": "verifier",
            "margin": 0.0,
        },
        {
            "case_id": case.id,
            "family": case.family,
            "chosen": "long " * 3000,
            "rejected": "x",
            "source": "verifier",
            "margin": 0.0,
        },
    ]
    rows, long = tokenize_pairs(tok, D, CASES, pairs, max_length=4096)
    assert len(rows) == 1 and len(long) == 1 and "max_length 4096" in long[0]["reason"]


@pytest.mark.parametrize(
    ("new", "old", "fams", "ok"),
    [
        (0.9, None, ({}, {}), True),
        (0.5, None, ({}, {}), False),
        (0.9, 0.8, ({"a": 0.9}, {"a": 0.8}), True),
        (0.805, 0.8, ({}, {}), False),
        (0.9, 0.8, ({"a": 0.6, "b": 1.0}, {"a": 0.8, "b": 0.8}), False),
        (None, 0.8, ({}, {}), False),
    ],
)
def test_gate(new, old, fams, ok) -> None:
    assert gate(new, old, fams, margin=0.01, tolerance=0.05, floor=0.55)[0] is ok

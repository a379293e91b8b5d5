"""The evidence behind a promotion: ECE, the paired bootstrap, the gate's checks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domains.errors import PonderError
from tasks import evaluate as ev

GATE = ev.GateConfig(resamples=500)


def _frame(correct: list[bool], family: str = "f", tokens: int = 10) -> pl.DataFrame:
    n = len(correct)
    return pl.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n)],
            "family": [family] * n,
            "difficulty": [1] * n,
            "correct": correct,
            "parsed": [True] * (n - 1) + [False],
            "tokens": [tokens] * n,
            "latency_s": [0.1] * n,
            "confidence": [0.9] * n,
        }
    )


def test_ece_is_zero_when_calibrated_and_large_when_overconfident() -> None:
    assert ev.ece(np.array([0.95, 0.95, 0.05, 0.05]), np.array([1.0, 1.0, 0.0, 0.0])) == (
        pytest.approx(0.05)
    )
    assert ev.ece(np.array([0.9, 0.9]), np.array([0.0, 0.0])) == pytest.approx(0.9)


def test_side_metrics() -> None:
    m = ev.side_metrics(_frame([True, False, True, False]))
    assert m["accuracy"] == 0.5 and m["parse_failure_rate"] == 0.25
    assert m["tokens_per_case"] == 10 and m["ece"] == pytest.approx(0.4)


def test_pair_matches_cases_and_counts_the_rest() -> None:
    champion, challenger = _frame([True, False, True]), _frame([True, True])
    joined, unmatched = ev.pair(champion, challenger)
    assert joined.height == 2 and unmatched == 1
    sides = ev.split_sides(joined)
    assert sides["challenger"]["correct"].to_list() == [True, True]
    assert sides["champion"]["correct"].to_list() == [True, False]
    with pytest.raises(PonderError, match="no case has a verdict from both"):
        ev.pair(champion, challenger.with_columns(pl.lit("x").alias("case_id")))


def test_bootstrap_interval_is_paired() -> None:
    """Same per-case outcomes shifted by one flip: the paired CI is tight around +1/40."""
    a = np.array([True, False] * 20)
    b = a.copy()
    b[1] = True
    diff, low, high = ev.paired_bootstrap(a, b, GATE)
    assert diff == pytest.approx(1 / 40) and low >= 0.0 and high <= 0.1
    assert ev.paired_bootstrap(a, a, GATE) == (0.0, 0.0, 0.0)


def _decide(champ: list[bool], chall: list[bool], tokens: int = 10) -> ev.Decision:
    sides = {"champion": _frame(champ), "challenger": _frame(chall, tokens=tokens)}
    metrics = {s: ev.side_metrics(f) for s, f in sides.items()}
    ci = ev.paired_bootstrap(np.array(champ), np.array(chall), GATE)
    return ev.decide(metrics, ci, ev.by_group(sides, ["family"]), GATE)


def test_gate_passes_a_clearly_better_challenger_and_says_why() -> None:
    d = _decide([False] * 30, [True] * 20 + [False] * 10)
    assert d.promote and all(r.startswith("PASS") for r in d.reasons)


def test_gate_refuses_on_cost_and_on_a_family_drop() -> None:
    d = _decide([False] * 30, [True] * 20 + [False] * 10, tokens=100)
    assert not d.promote and d.reasons[2].startswith("FAIL tokens per case x10.00")
    sides = {
        "champion": pl.concat([_frame([False] * 10, "a"), _frame([True] * 10, "b")]),
        "challenger": pl.concat([_frame([True] * 10, "a"), _frame([False] * 9 + [True], "b")]),
    }
    table = ev.by_group(sides, ["family"])
    assert table["delta"].to_list() == [1.0, -0.9]
    metrics = {s: ev.side_metrics(f) for s, f in sides.items()}
    d = ev.decide(metrics, (0.05, 0.01, 0.1), table, GATE)
    assert not d.promote and d.reasons[1].startswith("FAIL worst family b -0.900")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=60))
def test_a_challenger_no_better_than_the_champion_is_never_promoted(pairs) -> None:
    champ = [a for a, _ in pairs]
    chall = [a and b for a, b in pairs]  # never right where the champion is wrong
    assert not _decide(champ, chall).promote


def test_first_champion_needs_the_floor() -> None:
    assert ev.decide_first({"accuracy": 0.04}, GATE).promote is False
    assert ev.decide_first({"accuracy": 0.05}, GATE).promote is True


def test_markdown_has_decision_tables_and_plot(tmp_path) -> None:
    sides = {"champion": _frame([False] * 4), "challenger": _frame([True] * 3 + [False])}
    metrics = {s: ev.side_metrics(f) for s, f in sides.items()}
    table = ev.by_group(sides, ["family", "difficulty"])
    png = ev.comparison_plot(ev.by_group(sides, ["family"]), (0.75, 0.5, 1.0), tmp_path / "p.png")
    summary = {
        "name": "ponder-medicine-policy",
        "challenger": "2",
        "champion": "1",
        "dataset": "medicine/cases@v00001",
        "cases": 4,
        "unmatched": 0,
        "strategy": "cot N=1",
        "promoted": True,
        "reasons": ["PASS accuracy +0.750"],
    }
    text = ev.markdown(summary, metrics, table, png.read_bytes())
    assert text.startswith("# evaluate_promote ponder-medicine-policy v2: PROMOTED")
    assert "- PASS accuracy +0.750" in text and "| accuracy | 0 | 0.75 |" in text
    assert "| f | 1 | 4 | 0.000 | 0.750 | 0.750 |" in text
    assert "data:image/png;base64,iVBOR" in text

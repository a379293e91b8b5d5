"""AML typology shapes and grading."""

from __future__ import annotations

import random

import pytest

from domains.base import get_domain, set_f1
from domains.finance_risk.aml import TYPOLOGIES, pattern_edges

MEMBERS = [f"A{i}" for i in range(7)]


@pytest.mark.parametrize("typology", TYPOLOGIES)
def test_pattern_uses_all_members(typology: str) -> None:
    edges = pattern_edges(typology, MEMBERS[:6], random.Random(0))
    used = {a for s, d, _ in edges for a in (s, d)}
    assert used == set(MEMBERS[:6])


def test_shapes() -> None:
    rng = random.Random(0)
    assert {s for s, _, _ in pattern_edges("fan_out", MEMBERS, rng)} == {"A0"}
    assert {d for _, d, _ in pattern_edges("fan_in", MEMBERS, rng)} == {"A0"}
    cycle = pattern_edges("cycle", MEMBERS[:4], rng)
    assert cycle[-1][1] == cycle[0][0]
    walk = pattern_edges("random", MEMBERS[:5], rng)
    assert walk[-1][1] != walk[0][0]
    sg = pattern_edges("scatter_gather", MEMBERS[:5], rng)
    assert {h for *_, h in sg} == {0, 1}


def test_amounts_shrink_per_hop_and_sizes_by_difficulty() -> None:
    d = get_domain("finance_risk")
    for level, size in ((1, 20), (5, 200)):
        case = d.generate(1, 3, "aml_typology", level)[0]
        assert len(case.inputs["transactions"]) == size
    case = next(c for c in d.generate(40, 1, "aml_typology", 3) if c.truth["typology"] == "cycle")
    rows = {t["txn_id"]: t for t in case.inputs["transactions"]}
    amounts = [
        rows[t]["amount"]
        for t in sorted(case.truth["transactions"], key=lambda t: rows[t]["timestamp"])
    ]
    assert amounts[-1] < amounts[0] * 0.95


def test_grading_partial_credit() -> None:
    d = get_domain("finance_risk")
    case = d.generate(1, 0, "aml_typology", 1)[0]
    truth = case.truth
    wrong_label = {**truth, "typology": "cycle" if truth["typology"] != "cycle" else "fan_in"}
    v = d.verify(case, d.family("aml_typology").coerce(wrong_label))
    assert not v.correct and v.score == pytest.approx(2 / 3)
    assert set_f1({"a", "b"}, {"a"}) == pytest.approx(2 / 3)


def test_gather_scatter_and_stack_follow_amlsim_shapes() -> None:
    rng = random.Random(0)
    gs = pattern_edges("gather_scatter", MEMBERS[:5], rng)  # (5 - 1) // 2 = 2 sources
    assert [s for s, d, h in gs if h == 0] == ["A1", "A2"]
    assert [d for s, d, h in gs if h == 1] == ["A3", "A4"]
    st = pattern_edges("stack", [f"A{i}" for i in range(8)], rng)  # 8 // 3 = 2, 2, rest 4
    assert {s for s, _, h in st if h == 0} == {"A0", "A1"}
    assert {s for s, _, h in st if h == 1} == {"A2", "A3"}
    assert {d for _, d, h in st if h == 1} == {"A4", "A5", "A6", "A7"}


def test_random_chain_starts_at_subject_and_is_shuffled() -> None:
    orders = {
        tuple(s for s, _, _ in pattern_edges("random", MEMBERS, random.Random(seed)))
        for seed in range(10)
    }
    assert all(order[0] == "A0" for order in orders) and len(orders) > 1


@pytest.mark.parametrize("level", [1, 3, 5])
def test_every_intermediary_forwards_what_it_received_less_the_margin(level: int) -> None:
    d = get_domain("finance_risk")
    checked = 0
    for case in d.generate(200, 7, "aml_typology", level):
        rows = {t["txn_id"]: t for t in case.inputs["transactions"]}
        bad = [rows[t] for t in case.truth["transactions"]]
        for acct in case.truth["accounts"]:
            got = sum(t["amount"] for t in bad if t["to_account"] == acct)
            paid = sum(t["amount"] for t in bad if t["from_account"] == acct)
            if (
                got
                and paid
                and case.truth["typology"] != "cycle"
                or (case.truth["typology"] == "cycle" and acct != case.inputs["subject_account"])
            ):
                assert 0.88 - 1e-3 <= paid / got <= 0.92 + 1e-3, (case.id, acct)
                checked += 1
    assert checked > 50

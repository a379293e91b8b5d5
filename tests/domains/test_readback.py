"""The truth recomputed from the rendered text equals the stored truth (500 seeds per
family and difficulty). The parsers read only the text a model sees, never the facts the
generator drew, so a truth that rests on a hidden fact or a unit round trip fails here."""

from __future__ import annotations

import pytest

from domains.base import get_domain
from domains.finance_risk.aml import MARGIN
from domains.finance_risk.credit import irb_inputs
from domains.finance_risk.readback import (
    classify,
    forwarding_ratios,
    read_aml,
    read_credit,
    read_structuring,
)
from domains.finance_risk.structuring import assess
from domains.medicine.calculators import CALCULATORS
from domains.medicine.readback import read_note

SEEDS = 500


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_clinical_truth_follows_from_the_note(difficulty: int) -> None:
    d = get_domain("medicine")
    for case in d.generate(SEEDS, 2024, "clinical_calc", difficulty):
        spec = CALCULATORS[case.inputs["calculator"]]
        got = spec.compute(read_note(case.inputs["note"]))
        want = {"value": spec.rounded(got.value), "criteria": sorted(got.criteria)}
        assert want == case.truth, case.id


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_structuring_truth_follows_from_the_table(difficulty: int) -> None:
    d = get_domain("finance_risk")
    fam = d.family("structuring")
    for case in d.generate(SEEDS, 2024, "structuring", difficulty):
        text = fam.render(fam.Inputs.model_validate(case.inputs))
        assert assess(read_structuring(text)).model_dump(mode="json") == case.truth, case.id


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_credit_figures_follow_from_the_text(difficulty: int) -> None:
    d = get_domain("finance_risk")
    fam = d.family("credit_capital")
    for case in d.generate(SEEDS, 2024, "credit_capital", difficulty):
        got = irb_inputs(read_credit(fam.render(fam.Inputs.model_validate(case.inputs))))
        for key in ("R", "K", "RWA"):
            assert getattr(got, key) == pytest.approx(case.truth[key], rel=1e-9), case.id


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_aml_pattern_in_the_text_fits_its_label(difficulty: int) -> None:
    # the laundering rows, read from the text, have the shape the prompt defines for the
    # label, span exactly the member accounts, and each hop forwards what arrived less
    # ~10%; at difficulty 1-2 the alert tags in the text are exactly those rows
    d = get_domain("finance_risk")
    fam = d.family("aml_typology")
    lo, hi = 1 - MARGIN[1] - 1e-4, 1 - MARGIN[0] + 1e-4
    for case in d.generate(SEEDS, 2024, "aml_typology", difficulty):
        alert, subject, rows = read_aml(fam.render(fam.Inputs.model_validate(case.inputs)))
        bad = [r for r in rows if r.txn_id in set(case.truth["transactions"])]
        assert classify([(r.src, r.dst) for r in bad]) == case.truth["typology"], case.id
        assert sorted({r.src for r in bad} | {r.dst for r in bad}) == case.truth["accounts"]
        assert subject in case.truth["accounts"]
        origin = subject if case.truth["typology"] == "cycle" else None
        assert all(lo <= ratio <= hi for ratio in forwarding_ratios(bad, origin)), case.id
        tagged = sorted(r.txn_id for r in rows if r.alert == alert)
        assert tagged == (case.truth["transactions"] if difficulty <= 2 else []), case.id


@pytest.mark.parametrize(
    ("edges", "label"),
    [
        ("a>b a>c a>d", "fan_out"),
        ("b>a c>a d>a", "fan_in"),
        ("a>b b>c c>a", "cycle"),
        ("a>c a>d b>c b>d", "bipartite"),
        ("a>c a>d b>c b>d c>e c>f d>e d>f", "stack"),
        ("a>c c>b b>d", "random"),
        ("a>c a>d a>e c>b d>b e>b", "scatter_gather"),
        ("b>a c>a a>d a>e", "gather_scatter"),
        ("b>a a>d a>e", "unknown"),  # one gathering source is not gather-scatter
        ("a>c a>d b>c", "unknown"),  # an incomplete bipartite graph
        ("a>b b>a c>d d>c", "unknown"),  # two cycles
    ],
)
def test_classify_follows_the_prompt_definitions(edges: str, label: str) -> None:
    assert classify([tuple(e.split(">")) for e in edges.split()]) == label


def test_readback_sees_a_changed_note() -> None:
    d = get_domain("medicine")
    case = next(
        c for c in d.generate(200, 1, "clinical_calc", 3) if c.inputs["calculator"] == "bmi"
    )
    facts = read_note(case.inputs["note"])
    changed = read_note(case.inputs["note"].replace("weight ", "weight 1", 1))
    assert changed.weight_kg != facts.weight_kg

"""The truth recomputed from the rendered text equals the stored truth (500 seeds per
family and difficulty). The parsers read only the text a model sees, never the facts the
generator drew, so a truth that rests on a hidden fact or a unit round trip fails here."""

from __future__ import annotations

import pytest

from domains.base import get_domain
from domains.finance_risk.readback import read_structuring
from domains.finance_risk.structuring import assess
from domains.medicine.calculators import CALCULATORS
from domains.medicine.readback import read_note

SEEDS = 500


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_clinical_truth_follows_from_the_note(difficulty: int) -> None:
    d = get_domain("medicine")
    for case in d.generate(SEEDS, 2024, "clinical_calc", difficulty):
        spec = CALCULATORS[case.inputs["calculator"]]
        value, criteria, _ = spec.compute(read_note(case.inputs["note"]))
        value = round(value) if spec.integer else round(value, 4)
        assert {"value": value, "criteria": sorted(criteria)} == case.truth, case.id


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_structuring_truth_follows_from_the_table(difficulty: int) -> None:
    d = get_domain("finance_risk")
    fam = d.family("structuring")
    for case in d.generate(SEEDS, 2024, "structuring", difficulty):
        text = fam.render(fam.Inputs.model_validate(case.inputs))
        assert assess(read_structuring(text)).model_dump(mode="json") == case.truth, case.id


def test_readback_sees_a_changed_note() -> None:
    d = get_domain("medicine")
    case = next(
        c for c in d.generate(200, 1, "clinical_calc", 3) if c.inputs["calculator"] == "bmi"
    )
    facts = read_note(case.inputs["note"])
    changed = read_note(case.inputs["note"].replace("weight ", "weight 1", 1))
    assert changed.weight_kg != facts.weight_kg

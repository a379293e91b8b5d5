"""MedCalc-Bench rows as they ship: a hand-written file with the format's oddities (nothing is
downloaded): a supported formula with a right label, one whose label ponder's calculator
disputes, a score, an unsupported calculator, a date answer, and bad rows."""

from __future__ import annotations

import json

import pytest

from domains.base import get_domain
from domains.loading import row_to_case
from domains.medicine import medcalc_bench as mb
from tests.datasets import NOTE, ROWS


def _outcome(row: dict[str, object]) -> object:
    try:
        return mb.row_case(row)
    except mb.Refused as err:
        return str(err)


def test_supported_rows_become_cases_with_the_rows_own_tolerance() -> None:
    domain = get_domain("medicine")
    case = row_to_case(domain, mb.row_case(ROWS[0]))
    assert case.truth == {"value": 16.0, "criteria": [], "lower": 15.2, "upper": 16.8}
    assert case.inputs["origin"]["tags"] == [] and case.inputs["origin"]["ponder_value"] == 16
    prompt = domain.prompt(case)[-1]["content"]
    assert NOTE in prompt and "Question: What is the patient's anion gap" in prompt
    assert "pmc-1" not in json.dumps(case.model_dump())  # the note id is hashed into the id
    assert case.id == row_to_case(domain, mb.row_case(ROWS[0])).id  # stable
    fam, truth = domain.family("clinical_calc"), case.truth
    for value, ok in ((15.3, True), (16.8, True), (14.9, False)):  # the limits, not ponder's 5%
        answer = fam.Answer.model_validate({"value": value})
        verdict = fam.grade(fam.Inputs.model_validate(case.inputs), fam.Answer(**truth), answer)
        assert verdict.correct is ok, value


def test_the_explanation_becomes_a_derived_reference_with_calculator_calls() -> None:
    case = mb.row_case(ROWS[0])
    assert case["reference"].startswith("## Step 1: The formula is sodium")
    assert "<<140 - (100 + 24)>> = 16 mEq/L" in case["reference"]
    assert case["reference"].endswith('Answer: {"value": 16.0, "criteria": []}')
    assert case["inputs"]["origin"]["reference"].startswith("derived")
    assert mb.with_calls("so 2 + 2 = 5 here") == "so 2 + 2 = 5 here"  # wrong sums stay text


def test_a_disputed_label_is_tagged_with_both_values() -> None:
    origin = mb.row_case(ROWS[1])["inputs"]["origin"]
    assert origin["tags"] == ["label_disagreement"]
    assert origin["dataset_value"] == 30.0 and origin["ponder_value"] == pytest.approx(22.0965)
    assert "outside the dataset's [28.5, 31.5]" in origin["check"]


def test_scores_are_exact_and_not_cross_checked_from_entities() -> None:
    case = mb.row_case(ROWS[2])
    assert case["truth"] == {"value": 2.0, "criteria": []}  # no limits: exact
    assert case["inputs"]["origin"]["ponder_value"] is None


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (ROWS[3], "calculator not implemented: Free Water Deficit"),
        (ROWS[4], "calculator not implemented: Estimated Due Date"),
        (ROWS[5], "Relevant Entities: only literals are read, found Attribute, Call, Name"),
        (ROWS[6], "limits [17, 18] must be finite and hold 16"),
    ],
)
def test_rows_that_cannot_be_cases_are_refused_with_the_reason(row: dict, reason: str) -> None:
    assert _outcome(row) == reason


def test_entities_parse_without_eval_and_long_ones_are_refused() -> None:
    assert mb.parse_entities("{'age': [87, 'years'], 'x': -1.5, 'ok': True}") == {
        "age": [87, "years"],
        "x": -1.5,
        "ok": True,
    }
    with pytest.raises(mb.Refused, match="characters"):
        mb.parse_entities("{" + "'a': 1, " * 5000 + "}")
    with pytest.raises(mb.Refused, match="expected a dict"):
        mb.parse_entities("[1, 2]")

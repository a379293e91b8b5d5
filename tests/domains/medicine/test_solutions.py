"""Clinical references compute through the calculator and arrive at the truth."""

from __future__ import annotations

import pytest

from domains.base import get_domain
from domains.calc import calls_in
from domains.medicine.calculators import CALCULATORS


@pytest.mark.parametrize("difficulty", [1, 3, 5])
def test_every_call_succeeds_and_the_last_one_is_the_answer(difficulty: int) -> None:
    d = get_domain("medicine")
    for case in d.generate(200, 11, "clinical_calc", difficulty):
        calls = calls_in(case.reference)
        assert all(c.ok for c in calls), case.id
        spec = CALCULATORS[case.inputs["calculator"]]
        met = case.truth["criteria"]
        if calls and (
            spec.unit != "points" or case.inputs["calculator"] == "meld_na" or len(met) > 1
        ):
            # 6-decimal intermediates: within 1e-5 of the truth (the grader allows 5%)
            want = case.truth["value"]
            assert spec.rounded(calls[-1].value) == pytest.approx(want, rel=1e-5), case.id


def test_criteria_lines_say_why() -> None:
    d = get_domain("medicine")
    refs = [c.reference for c in d.generate(300, 5, "clinical_calc", 3)]
    text = "\n".join(refs)
    for phrase in (
        "denied, so absent",
        "not mentioned, so absent",
        "is in the note",
        "? yes",
        "? no",
    ):
        assert phrase in text

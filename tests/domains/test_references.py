"""Reference solutions compute through the calculator: every call succeeds, and the numbers
they end on are the truth's."""

from __future__ import annotations

import pytest

from domains.base import get_domain
from domains.calc import calls_in

FAMILIES = [
    ("finance_risk", "aml_typology"),
    ("finance_risk", "credit_capital"),
    ("finance_risk", "structuring"),
    ("medicine", "clinical_calc"),
]


@pytest.mark.parametrize(("domain", "family"), FAMILIES)
@pytest.mark.parametrize("difficulty", [1, 3, 5])
def test_every_reference_call_succeeds(domain: str, family: str, difficulty: int) -> None:
    cases = get_domain(domain).generate(60, 3, family, difficulty)
    calls = [c for case in cases for c in calls_in(case.reference)]
    assert all(c.ok for c in calls)
    if family != "aml_typology":  # AML computes only where a pattern has intermediaries
        assert sum(bool(calls_in(c.reference)) for c in cases) >= 0.8 * len(cases)


@pytest.mark.parametrize("difficulty", [1, 3, 5])
def test_credit_reference_ends_on_the_rwa(difficulty: int) -> None:
    for case in get_domain("finance_risk").generate(60, 4, "credit_capital", difficulty):
        # intermediates are shown to 6 decimals (fewer tokens to copy): the chain ends within
        # 1e-4 of the exact RWA, ten times inside the grader's 1e-3
        last = calls_in(case.reference)[-1]
        assert last.value == pytest.approx(case.truth["RWA"], rel=1e-4, abs=1e-6), case.id


def test_structuring_daily_sums_are_the_totals() -> None:
    for case in get_domain("finance_risk").generate(60, 4, "structuring", 4):
        sums = {c.value for c in calls_in(case.reference)}
        for day in case.truth["daily_totals"].values():
            for side in ("cash_in", "cash_out"):
                shown = float(day[side])
                assert shown == 0 or shown in sums or f"{shown:.2f}" in case.reference

"""Redaction recall and precision on the evaluation set (issue 20 item 1): 1,000
identifiers of every kind in clinical notes and finance texts, in the formats real text
uses (unlabelled and lowercase names, "Last, First", particles and accents, international
phones, spaced and lowercase IBANs, unseparated cards and SSNs, dates of birth in words),
a quarter with a zero-width character or a line break inside, and names seen once and then
met again in another case, spelling or line.

Goals: recall of at least 99% on every kind, and at least 95% precision on clinical text
(lab values, doses and dates of service survive). The figures go to the fault table of
``make reliability`` (attempts, caught, leaked)."""

from __future__ import annotations

import pytest

from domains.base import get_domain
from domains.identifiers import Sample, build, masked_chars, score
from domains.privacy import Known, Redactor

KEY = b"k" * 32


def _redact(samples: list[Sample]) -> dict:
    known = Known()  # one memory across the set, as in one process
    reds = {d: Redactor(get_domain(d).redaction, KEY, known) for d in ("medicine", "finance_risk")}
    return score(samples, lambda text, domain: reds[domain].text(text))


@pytest.fixture(scope="module")
def result() -> dict:
    samples = build()
    assert sum(len(s.ids) for s in samples) >= 500
    assert {s.domain for s in samples} == {"medicine", "finance_risk"}
    return _redact(samples)


def test_recall_is_at_least_99_percent_on_every_kind(result: dict, record) -> None:
    low = {k: f"{a}/{n}" for k, (a, n) in result["recall"].items() if a < 0.99 * n}
    assert low == {}, f"recall under 99%: {low}; leaks: {result['leaks'][:20]}"
    for kind, (caught, n) in result["recall"].items():
        record(f"redaction recall: {kind}", n, caught, n - caught)


def test_precision_is_at_least_95_percent_and_clinical_values_survive(result: dict) -> None:
    medicine = _redact([s for s in build() if s.domain == "medicine"])
    assert medicine["precision"] >= 0.95, medicine["precision"]
    kept, values = medicine["values_kept"]
    assert kept >= 0.95 * values, (kept, values)
    assert result["precision"] >= 0.95, result["precision"]


def test_the_scorer_counts_a_partial_mask_as_a_leak() -> None:
    """The yardstick itself: "de la Cruz" kept counts against recall."""
    s = Sample("medicine")
    s.add("Wire from ")
    s.add("Anna Maria de la Cruz", "name_labelled")
    s.add(" today.")
    half = score([s], lambda text, _: text.replace("Anna Maria", "[NAME-0123456789abcdef]"))
    assert half["recall"]["name_labelled"] == (0, 1)
    whole = score(
        [s], lambda text, _: text.replace("Anna Maria de la Cruz", "[N-0123456789abcdef]")
    )
    assert whole["recall"]["name_labelled"] == (1, 1) and whole["precision"] == 1.0
    assert masked_chars("ab12", "ab[X-0123456789abcdef]") == [False, False, True, True]

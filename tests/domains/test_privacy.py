"""Redaction: every identifier kind is masked, the same identifier gets the same mask,
masking is idempotent, and bad configuration is refused with the field named."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domains.base import get_domain
from domains.privacy import RedactionConfig, Redactor

KEY = b"k" * 32
NOTE = (
    "Patient: Marisol Okonkwo, DOB: 1961-04-03, MRN QX4821390. Phone (555) 812-3456, "
    "email m.okonkwo@example.org, SSN 123-45-6789. Daughter Ines Okonkwo at 555-812-9000. "
    "Seen by Dr. Tomas Herrera. A 64-year-old woman, Na 140, HCO3 24."
)
PLANTED = [
    "Marisol Okonkwo",
    "1961-04-03",
    "QX4821390",
    "(555) 812-3456",
    "m.okonkwo@example.org",
    "123-45-6789",
    "Ines Okonkwo",
    "555-812-9000",
    "Tomas Herrera",
]


def red(**kw) -> Redactor:
    return Redactor(RedactionConfig(**kw), KEY)


def test_every_planted_identifier_is_masked_and_clinical_facts_stay() -> None:
    out = red().text(NOTE)
    assert not [p for p in PLANTED if p in out], out
    assert "64-year-old woman, Na 140, HCO3 24" in out and "MRN [MRN-" in out


def test_same_identifier_same_mask_across_formats_and_keys_differ() -> None:
    r = red()
    assert r.text("phone (555) 812-3456") == r.text("phone 555-812-3456")
    assert r.text("Patient: Ann Lee") == r.text("Patient: ann  lee".title())
    other = Redactor(RedactionConfig(), b"z" * 32)
    assert other.text("Patient: Ann Lee") != r.text("Patient: Ann Lee")


def test_disabled_and_per_domain_patterns() -> None:
    assert red(enabled=False).text(NOTE) == NOTE
    finance = Redactor(get_domain("finance_risk").redaction, KEY)
    out = finance.text("Alert ALRT-1 on account A2126\nKYC: Blue Lotus Cafe, business")
    assert "A2126" not in out and "Blue Lotus Cafe" not in out and "ALRT-1" in out
    values = red().value({"a": [NOTE, 3], "b": ("Dr. Ann Lee",)})
    assert "Okonkwo" not in values["a"][0] and values["a"][1] == 3 and "Lee" not in values["b"][0]


def test_bad_configuration_names_the_field() -> None:
    with pytest.raises(ValidationError, match="(?s)detectors.*unknown detectors \\['nope'\\]"):
        RedactionConfig(detectors=["nope"])
    with pytest.raises(ValidationError, match="(?s)patterns.*'acct' is not a valid regex"):
        RedactionConfig(patterns={"acct": "(unclosed"})
    with pytest.raises(Exception, match="PONDER_REDACT_KEY"):
        Redactor(RedactionConfig(), b"short")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ({"email": r"(?P<id>zzz)"}, "name of a built-in detector"),  # would replace a built-in
        ({"name": r"(?P<id>zzz)"}, "name of a built-in detector"),  # a kind built-ins map to
        ({"badge": r"(?P<id>\d*)"}, "matches the empty string"),
        ({"badge": r"x?"}, "matches the empty string"),
        ({"badge": r"(a+)+$"}, "takes over"),  # exponential backtracking
        ({"badge": r"(\w+\s?)+$"}, "takes over"),
        ({"badge": r"(a|aa)+b"}, "takes over"),
    ],
)
def test_custom_patterns_that_shadow_garble_or_stall_are_refused(pattern, message) -> None:
    with pytest.raises(ValidationError, match=f"(?s)patterns.*{message}"):
        RedactionConfig(patterns=pattern)


def test_a_custom_pattern_masks_and_a_slow_one_withholds_the_text() -> None:
    import time

    badge = red(patterns={"badge": r"BADGE-(?P<id>\d{6})"}).text("staff BADGE-123456 on shift")
    assert "123456" not in badge and "[BADGE-" in badge
    slow = red(patterns={"slowpoke": r"(q|qq)+b"})  # passes the probes, stalls on q runs
    start = time.perf_counter()
    out = slow.text("Patient: Ann Lee " + "q" * 40)
    assert time.perf_counter() - start < 2.0
    assert out.startswith("[WITHHELD") and "Ann Lee" not in out


FIRST = st.sampled_from(["Ann", "Bob", "Chiara", "Dmitri", "Esi", "Farid", "Gwen"])
LAST = st.sampled_from(["Lee", "Okafor", "Nakamura", "Silva", "Kowalski", "Haddad"])
FILLER = st.text(alphabet="abcdefghij klmnop 0123456789.,;", max_size=40)


@settings(max_examples=200, deadline=None)
@given(FIRST, LAST, st.integers(10**6, 10**9), st.integers(200, 999), FILLER, FILLER)
@example("Ann", "Lee", 10**6, 200, "name", "")  # a label word before the label ate the name
def test_planted_identifiers_never_survive(first, last, mrn, area, before, after) -> None:
    phone = f"({area}) 555-{mrn % 10000:04d}"
    text = f"{before} Patient: {first} {last} MRN {mrn} phone {phone} {after}"
    out = red().text(text)
    assert f"{first} {last}" not in out and str(mrn) not in out and phone not in out
    assert red().text(out) == out  # masking a masked text changes nothing


def test_an_identifier_seen_once_is_masked_without_its_label_later() -> None:
    r = red()
    r.learn({"note": "Patient: Rafferty Lindqvist, MRN QX1234567"})
    cut = "...ient: rafferty lindqvist was seen; QX1234567 reviewed"
    out = r.text(cut)
    assert "rafferty lindqvist" not in out and "QX1234567" not in out
    assert r.text("Patient: Rafferty Lindqvist") == f"Patient: {r.mask('name', 'x')}".replace(
        r.mask("name", "x"), r.mask("name", "Rafferty Lindqvist")
    )
    assert red().text(cut) == cut  # a fresh redactor has seen nothing: context is needed


def test_a_text_without_a_capital_never_reaches_the_name_model(monkeypatch) -> None:
    """A person span needs a capital letter (``_trim``), so a text without one is not run
    through the named-entity model: same spans, none of its time."""
    from domains import recognizers

    def refuse() -> None:
        raise AssertionError("the name model ran")

    monkeypatch.setattr(recognizers, "ner_engine", refuse)
    assert recognizers.person_spans('{"value": 12.5} <<60 / 69>> = 0.87 no capital here') == ()
    with pytest.raises(AssertionError, match="name model ran"):
        recognizers.person_spans("Seen with Ann Lee today")

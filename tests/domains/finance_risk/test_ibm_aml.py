"""IBM AML's format: the patterns file's blocks and oddities, the typology table, and an
alert case that validates, grades its own reference as right and masks its accounts."""

from __future__ import annotations

import datetime as dt

from domains.base import get_domain
from domains.finance_risk import FinanceRisk
from domains.finance_risk import ibm_aml as fmt
from domains.finance_risk.aml import TYPOLOGIES
from domains.loading import row_to_case
from domains.privacy import Redactor
from tests.datasets import IBM_PATTERNS

LINE = "2022/09/02 10:05,00070,8100A0001,00012,8100A0002,9000.00,US Dollar,9000.00,US Dollar,ACH,1"


def test_every_ibm_typology_maps_onto_one_of_ponders_labels() -> None:
    assert sorted(fmt.TYPOLOGY.values()) == sorted(TYPOLOGIES)


def test_blocks_parse_with_detail_suffixes_and_zero_padded_banks() -> None:
    attempts, refused = fmt.parse_patterns(IBM_PATTERNS.splitlines())
    assert [(a.typology, a.detail, a.line, len(a.keys)) for a in attempts] == [
        ("fan_out", None, 1, 3),
        ("cycle", "Max 3 hops", 7, 3),
    ]
    when = dt.datetime(2022, 9, 2, 10, 5)
    assert attempts[0].keys[0] == fmt.key(when, 70, "8100A0001", 12, "8100A0002", 9000.0)
    (unclosed,) = refused
    assert unclosed["line"] == 13 and "unterminated block" in unclosed["reason"]


def test_every_broken_block_is_refused_with_its_line_and_reason() -> None:
    text = [
        LINE,  # 1: outside any block
        "BEGIN LAUNDERING ATTEMPT - FAN-OUT",  # 2: unterminated (the next BEGIN comes first)
        LINE,
        "BEGIN LAUNDERING ATTEMPT - SMURFING",  # 4: not a typology ponder maps
        LINE,
        "END LAUNDERING ATTEMPT - SMURFING",
        "BEGIN LAUNDERING ATTEMPT - CYCLE",  # 7: closes as another typology
        LINE,
        "END LAUNDERING ATTEMPT - FAN-IN",
        "BEGIN LAUNDERING ATTEMPT - STACK",  # 10: a line with a field missing
        LINE.rsplit(",", 1)[0],
        "END LAUNDERING ATTEMPT - STACK",
        "BEGIN LAUNDERING ATTEMPT - RANDOM",  # 13: a bad timestamp
        "2022-09-02T10:05" + LINE[16:],
        "END LAUNDERING ATTEMPT - RANDOM",
    ]
    attempts, refused = fmt.parse_patterns(text)
    assert attempts == []
    got = {r["line"]: r["reason"] for r in refused}
    assert sorted(got) == [1, 2, 4, 7, 10, 13]
    assert "outside any BEGIN/END" in got[1] and "unterminated" in got[2]
    assert got[4].startswith("typology not mapped: SMURFING")
    assert "closes as FAN-IN" in got[7]
    assert got[10] == "line 11: 10 fields, expected 11 (" + ", ".join(fmt.COLUMNS) + ")"
    assert got[13] == "line 14: Timestamp is not YYYY/MM/DD HH:MM"


def _row(n: int, src: str, dst: str, amount: float, hour: int) -> dict:
    when = dt.datetime(2022, 9, 2, hour)
    return {"row": n, "timestamp": when, "from_account": src, "to_account": dst,
            "amount_paid": amount, "payment_currency": "US Dollar",
            "payment_format": "ACH"}  # fmt: skip


def test_an_alert_validates_and_its_derived_reference_grades_right() -> None:
    bad = [
        _row(3, "8100A0001", "8100A0002", 9000.0, 10),
        _row(4, "8100A0001", "8100A0003", 8800.0, 11),
    ]
    attempt = fmt.Attempt(typology="fan_out", name="FAN-OUT", detail=None, line=1)
    dump = fmt.alert_case(attempt=attempt, subject=fmt.subject_of(bad), bad=bad,
                          context=[_row(9, "8100A0002", "8300C0001", 120.5, 15)],
                          entity_type="Corporation", case_key="00ff00ff00ff00ff")  # fmt: skip
    domain = get_domain("finance_risk")
    case = row_to_case(domain, dump)
    assert case.inputs["subject_account"] == "8100A0001" and case.truth["transactions"] == [
        "T3",
        "T4",
    ]
    assert case.inputs["origin"]["truth"].startswith("derived")
    verdict = domain.verify(case, domain.parse(case.reference or "", case))
    assert verdict.correct, verdict.detail
    prompt = domain.prompt(case)[-1]["content"]
    assert "KYC: not provided by the source. Entity type: Corporation." in prompt


def test_a_negative_alert_answers_none_and_grades_right() -> None:
    dump = fmt.alert_case(attempt=None, subject="8400D0001", bad=[],
                          context=[_row(12, "8400D0001", "8400D0002", 410.0, 9)],
                          entity_type=None, case_key="0123456789abcdef")  # fmt: skip
    domain = get_domain("finance_risk")
    case = row_to_case(domain, dump)
    assert case.truth == {"typology": "none", "accounts": [], "transactions": []}
    assert domain.verify(case, domain.parse(case.reference or "", case)).correct


def test_ibm_account_numbers_are_masked_and_amounts_are_not() -> None:
    r = Redactor(FinanceRisk.redaction, b"k" * 32)
    out = r.text("T3,09-02 10:05,8100A0001,800737690,123456789.50,ACH; paid 8100A0002.")
    assert "8100A0001" not in out and "800737690" not in out and "8100A0002" not in out
    assert "123456789.50" in out

"""CTR aggregation, structuring and SAR threshold on hand-built activity."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from domains.finance_risk.structuring import (
    CashTxn,
    StructuringInputs,
    assess,
    bank_holiday,
    business_day,
    is_business_day,
)


def _t(i: int, day: str, amount: str, kind: str = "cash_in", who: str = "C1") -> CashTxn:
    return CashTxn(
        txn_id=f"T{i}",
        date=dt.date.fromisoformat(day),
        branch="Main St",
        customer_id=who,
        kind=kind,
        amount=Decimal(amount),
    )


def test_ctr_day_and_structuring_window() -> None:
    x = StructuringInputs(
        customer_id="C1",
        customer_name="A",
        transactions=[
            _t(1, "2026-03-02", "4000.00"),
            _t(2, "2026-03-02", "3500.00"),
            _t(3, "2026-03-02", "2900.00"),  # Monday: 10,400.00 -> CTR
            _t(4, "2026-03-03", "9000.00"),
            _t(5, "2026-03-04", "2000.00"),  # Tue+Wed 11,000
            _t(6, "2026-03-04", "15000.00", kind="wire"),  # not cash
            _t(7, "2026-03-04", "12000.00", who="C2"),  # another customer
        ],
    )
    a = assess(x)
    assert a.ctr_due and a.ctr_days == ["2026-03-02"]
    assert a.daily_totals["2026-03-02"].cash_in == Decimal("10400.00")
    assert a.daily_totals["2026-03-04"].cash_in == Decimal("2000.00")
    assert a.structuring and a.sar_threshold_met


def test_exactly_10000_is_not_more_than_and_in_out_not_netted() -> None:
    x = StructuringInputs(
        customer_id="C1",
        customer_name="A",
        transactions=[
            _t(1, "2026-03-02", "10000.00"),
            _t(2, "2026-03-02", "10000.01", kind="cash_out"),
        ],
    )
    a = assess(x)
    assert a.ctr_days == ["2026-03-02"]  # cash-out 10,000.01 > limit; cash-in 10,000 is not
    assert a.daily_totals["2026-03-02"].cash_in == Decimal("10000.00")
    assert not a.structuring  # a single deposit is not structuring


def test_weekend_rolls_to_monday() -> None:
    assert business_day(dt.date(2026, 3, 7)) == dt.date(2026, 3, 9)  # Saturday
    assert business_day(dt.date(2026, 3, 8)) == dt.date(2026, 3, 9)  # Sunday
    x = StructuringInputs(
        customer_id="C1",
        customer_name="A",
        transactions=[_t(1, "2026-03-07", "6000.00"), _t(2, "2026-03-09", "4000.01")],
    )
    a = assess(x)
    assert a.ctr_days == ["2026-03-09"] and list(a.daily_totals) == ["2026-03-09"]


def test_window_that_starts_on_a_day_without_activity() -> None:
    # Tue 6,000 + Wed 5,000 = 11,000 > 10,000 in the Mon-Wed window, which has no CTR day;
    # Thu 10,500 is a CTR day, and every window that starts on an active day contains it.
    x = StructuringInputs(
        customer_id="C1",
        customer_name="A",
        transactions=[
            _t(1, "2026-03-03", "6000.00"),
            _t(2, "2026-03-04", "5000.00"),
            _t(3, "2026-03-05", "10500.00"),
        ],
    )
    a = assess(x)
    assert a.ctr_days == ["2026-03-05"] and a.structuring


@pytest.mark.parametrize("offset", [0, 1, 2])
def test_every_window_position(offset: int) -> None:
    # two deposits 4 business days apart never share a window; 2 apart do, in any position
    days = ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"]
    pair = [days[offset], days[offset + 2]]
    x = StructuringInputs(
        customer_id="C1",
        customer_name="A",
        transactions=[_t(1, pair[0], "5000.50"), _t(2, pair[1], "5000.50")],
    )
    assert assess(x).structuring
    far = StructuringInputs(
        customer_id="C1",
        customer_name="A",
        transactions=[_t(1, days[0], "5000.50"), _t(2, "2026-03-06", "5000.50")],
    )
    assert not assess(far).structuring


def test_ctr_cents_boundary() -> None:
    for amount, due in (("10000.00", False), ("10000.01", True)):
        x = StructuringInputs(
            customer_id="C1", customer_name="A", transactions=[_t(1, "2026-03-02", amount)]
        )
        assert assess(x).ctr_due == due


def test_holiday_rolls_to_next_business_day() -> None:
    # Memorial Day, Mon 2026-05-25, is a Federal Reserve holiday: it belongs to Tue 05-26
    assert bank_holiday(dt.date(2026, 5, 25)) == "Memorial Day"
    assert business_day(dt.date(2026, 5, 25)) == dt.date(2026, 5, 26)
    # Sat 2026-05-23 rolls past the holiday Monday too
    assert business_day(dt.date(2026, 5, 23)) == dt.date(2026, 5, 26)
    # Independence Day 2026 is a Saturday: the Fed is open Friday 07-03; Sunday 2027-07-04
    # is observed on Monday 07-05
    assert is_business_day(dt.date(2026, 7, 3))
    assert not is_business_day(dt.date(2027, 7, 5))
    x = StructuringInputs(
        customer_id="C1",
        customer_name="A",
        transactions=[_t(1, "2026-05-25", "6000.00"), _t(2, "2026-05-26", "4000.01")],
    )
    a = assess(x)
    assert a.ctr_days == ["2026-05-26"] and list(a.daily_totals) == ["2026-05-26"]


def test_generated_cases_include_holidays_and_render_them() -> None:
    from domains.base import get_domain

    d = get_domain("finance_risk")
    cases = d.generate(200, 0, "structuring", 4)
    marked = [c for c in cases if "bank holiday" in d.prompt(c)[1]["content"]]
    assert marked


def _mo(*pairs: tuple[str, str]) -> StructuringInputs:
    txns = [_t(i, day, amount, kind="money_order") for i, (day, amount) in enumerate(pairs)]
    return StructuringInputs(customer_id="C1", customer_name="A", transactions=txns)


def test_money_orders_below_5000_are_structuring_without_sar() -> None:
    # 31 CFR 1010.415 records cash money-order purchases of $3,000+; Mon 2,400 + Tue 1,800
    # = 4,200 evades it (structuring), but 4,200 < 5,000 so no SAR is due (1020.320(a)(2))
    a = assess(_mo(("2026-03-02", "2400.00"), ("2026-03-03", "1800.00")))
    assert a.structuring and a.structured_amount == Decimal("4200.00")
    assert not a.sar_threshold_met and not a.ctr_due
    assert a.daily_totals["2026-03-02"].cash_in == Decimal("2400.00")  # cash in for CTR


@pytest.mark.parametrize(
    ("second", "structuring", "sar"),
    [
        ("599.99", False, False),  # 2,999.99 < 3,000
        ("600.00", True, False),  # exactly 3,000.00 meets the record threshold
        ("2599.99", True, False),  # 4,999.99
        ("2600.00", True, True),  # exactly 5,000.00
    ],
)
def test_money_order_thresholds(second: str, structuring: bool, sar: bool) -> None:
    a = assess(_mo(("2026-03-02", "2400.00"), ("2026-03-04", second)))
    assert (a.structuring, a.sar_threshold_met) == (structuring, sar)


def test_money_orders_on_one_day_are_one_recorded_purchase() -> None:
    # two purchases the same day totalling 3,000 are recorded as one: nothing evaded,
    # and that day blocks its windows
    a = assess(_mo(("2026-03-02", "1500.00"), ("2026-03-02", "1500.00")))
    assert not a.structuring and a.structured_amount == Decimal("0.00")
    b = assess(_mo(("2026-03-02", "2000.00"), ("2026-03-02", "1000.00"), ("2026-03-03", "900")))
    assert not b.structuring


def test_structured_amount_counts_each_transaction_once() -> None:
    # Mon 6,000, Tue 5,000, Wed 4,000: windows Mon-Wed (15,000) and Sun..Tue both qualify;
    # the aggregate is the distinct transactions, 15,000, not the sum over windows
    x = StructuringInputs(
        customer_id="C1",
        customer_name="A",
        transactions=[
            _t(1, "2026-03-02", "6000.00"),
            _t(2, "2026-03-03", "5000.00"),
            _t(3, "2026-03-04", "4000.00"),
        ],
    )
    a = assess(x)
    assert a.structuring and a.structured_amount == Decimal("15000.00") and a.sar_threshold_met


def test_generated_cases_cover_both_sides_of_the_sar_line() -> None:
    from domains.base import get_domain

    d = get_domain("finance_risk")
    truths = [c.truth for c in d.generate(300, 0, "structuring", 3)]
    below = [t for t in truths if t["structuring"] and not t["sar_threshold_met"]]
    above = [t for t in truths if t["structuring"] and t["sar_threshold_met"]]
    assert below and above


def test_an_amount_too_large_for_cents_is_a_parse_failure() -> None:
    # found by the fuzz test: 1e+26 made Decimal.quantize raise InvalidOperation
    from domains.base import ParseFailure, get_domain

    d = get_domain("finance_risk")
    case = d.generate(1, 0, "structuring", 1)[0]
    for field in ('"structured_amount": 1e+26', '"structured_amount": "0", "x": 0'):
        text = (
            'Answer: {"ctr_due": true, "ctr_days": [], "structuring": false, '
            f'{field}, "sar_threshold_met": false, "daily_totals": '
            '{"2026-01-26": {"cash_in": 1e+30, "cash_out": "0.00"}}}'
        )
        assert isinstance(d.parse(text, case), ParseFailure)

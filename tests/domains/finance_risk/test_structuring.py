"""CTR aggregation, structuring and SAR threshold on hand-built activity."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from domains.finance_risk.structuring import CashTxn, StructuringInputs, assess, business_day


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

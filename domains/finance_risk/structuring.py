"""US cash reporting: CTR aggregation, structuring and the SAR threshold, to the cent.

Rules (stated in the prompt so the ground truth is unambiguous):
- 31 CFR 1010.311/313: a CTR is due for cash-in or cash-out totalling more than $10,000
  in one business day, aggregated per person across branches. Cash-in and cash-out are
  totalled separately, never netted. Only cash counts (not wires or cheques), and only
  transactions by or for the customer under review. Activity on a Saturday, Sunday or a
  Federal Reserve holiday belongs to the next business day (31 CFR 1010.313(b)).
- 31 CFR 1010.415: a bank keeps a record of each cash purchase of money orders (or other
  monetary instruments) of $3,000 to $10,000; purchases on one business day are added up
  and treated as one purchase.
- 31 CFR 1010.314 (structuring, breaking up cash to evade a report or a record): ponder's
  red-flag rules are (a) two or more cash-in transactions (deposits and cash paid for money
  orders) within 3 consecutive business days totalling more than $10,000 while no business
  day in that window reached the CTR threshold, or (b) two or more cash money-order
  purchases within 3 consecutive business days totalling $3,000 or more while no business
  day in that window reached $3,000 of such purchases.
- 31 CFR 1020.320(a)(2): a bank SAR is due for suspicious activity involving $5,000 or more
  in aggregate. The structured amount is the total of the distinct transactions that lie in
  a window meeting (a) or (b); a SAR is due when structuring is indicated and that amount
  is at least $5,000. Structuring below $5,000 (rule (b) only) makes no SAR due.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal

import holidays
from pydantic import BaseModel, Field, field_validator

from domains.base import Family, Verdict
from domains.calc import annotate
from domains.parsing import to_bool, to_decimal, to_str_list
from domains.schema import MAX_ITEMS, Record

CTR_LIMIT = Decimal("10000.00")
SAR_LIMIT = Decimal("5000.00")
MI_LIMIT = Decimal("3000.00")  # 31 CFR 1010.415 record threshold for money orders
CASH_IN = ("cash_in", "money_order")  # cash received by the bank
LABELS = {
    "cash_in": "cash in",
    "cash_out": "cash out",
    "money_order": "money order (cash)",
    "wire": "wire",
    "cheque": "cheque",
}
CENT = Decimal("0.01")
BRANCHES = ["Main St", "Harbor Rd", "Airport Plaza", "Elm Park", "Riverside", "Downtown"]
PEOPLE = ["Dana Whitfield", "Luis Ortega", "Priya Raman", "Tom Becker", "Grace Okafor"]


class CashTxn(Record):
    """One teller or ATM transaction."""

    txn_id: str = Field(description="Transaction reference.")
    date: dt.date = Field(description="Posting date.")
    branch: str = Field(description="Branch or ATM location.")
    customer_id: str = Field(description="Customer the transaction is for.")
    kind: Literal["cash_in", "cash_out", "money_order", "wire", "cheque"] = Field(
        description="Instrument; money_order is a money order bought with cash (cash in)."
    )
    amount: Decimal = Field(gt=0, decimal_places=2, description="Amount in USD (positive).")


class StructuringInputs(Record):
    """One customer's recent activity as a BSA analyst sees it."""

    customer_id: str = Field(description="Customer under review.")
    customer_name: str = Field(description="Customer name.")
    transactions: list[CashTxn] = Field(
        min_length=1, max_length=MAX_ITEMS, description="Activity log."
    )


def cents(value: Any) -> Decimal:
    """An amount to the cent; one too large to hold in cents is a validation error."""
    try:
        return to_decimal(value).quantize(CENT)
    except InvalidOperation:
        raise ValueError(f"amount {value!r} is out of range") from None


class DayTotal(Record):
    cash_in: Decimal = Field(ge=0, description="Cash-in total for the business day.")
    cash_out: Decimal = Field(ge=0, description="Cash-out total for the business day.")

    @field_validator("cash_in", "cash_out", mode="before")
    @classmethod
    def _money(cls, value: Any) -> Decimal:
        return cents(value)


class StructuringAnswer(Record):
    """Filing decisions and the aggregated amounts."""

    ctr_due: bool = Field(description="Whether at least one CTR is due.")
    ctr_days: list[str] = Field(description="Business days (YYYY-MM-DD) needing a CTR.")
    structuring: bool = Field(description="Whether structuring is indicated.")
    structured_amount: Decimal = Field(
        ge=0, description="Total of the transactions in structuring windows (0.00 if none)."
    )
    sar_threshold_met: bool = Field(description="Whether the SAR threshold is met.")
    daily_totals: dict[str, DayTotal] = Field(description="Cash totals per business day.")

    @field_validator("ctr_due", "structuring", "sar_threshold_met", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> bool:
        return to_bool(value)

    @field_validator("structured_amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal:
        return cents(value)

    @field_validator("ctr_days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> list[str]:
        return sorted(to_str_list(value))


@lru_cache(maxsize=64)
def _fed_holidays(year: int) -> dict[dt.date, str]:
    """The Federal Reserve holiday calendar (Sunday holidays observed on Monday; Saturday
    holidays are not moved), from the ``holidays`` package's XFED calendar."""
    return dict(holidays.financial_holidays("XFED", years=year).items())


def bank_holiday(day: dt.date) -> str | None:
    """The holiday's name when the Federal Reserve is closed on ``day``, else None."""
    return _fed_holidays(day.year).get(day)


def is_business_day(day: dt.date) -> bool:
    return day.weekday() < 5 and bank_holiday(day) is None


def business_day(day: dt.date) -> dt.date:
    """Weekend and holiday activity rolls forward to the next business day."""
    while not is_business_day(day):
        day += dt.timedelta(days=1)
    return day


def next_business_day(day: dt.date) -> dt.date:
    return business_day(day + dt.timedelta(days=1))


def assess(x: StructuringInputs) -> StructuringAnswer:
    """Apply the rules in the module docstring."""
    by_day: dict[dt.date, list[CashTxn]] = {}
    for t in x.transactions:
        if t.customer_id == x.customer_id and t.kind in (*CASH_IN, "cash_out"):
            by_day.setdefault(business_day(t.date), []).append(t)
    totals = {d: _day_total(ts) for d, ts in sorted(by_day.items())}
    ctr_days = sorted(d for d, b in totals.items() if max(b.cash_in, b.cash_out) > CTR_LIMIT)
    mi_days = {d for d, ts in by_day.items() if _sum(ts, ("money_order",)) >= MI_LIMIT}
    hits = _pattern(by_day, CASH_IN, set(ctr_days), lambda v: v > CTR_LIMIT)
    hits |= _pattern(by_day, ("money_order",), mi_days, lambda v: v >= MI_LIMIT)
    structured = sum((t.amount for t in hits.values()), Decimal(0))
    return StructuringAnswer(
        ctr_due=bool(ctr_days),
        ctr_days=[d.isoformat() for d in ctr_days],
        structuring=bool(hits),
        structured_amount=structured,
        sar_threshold_met=bool(hits) and structured >= SAR_LIMIT,
        daily_totals={d.isoformat(): b for d, b in totals.items()},
    )


def _sum(txns: list[CashTxn], kinds: tuple[str, ...]) -> Decimal:
    return sum((t.amount for t in txns if t.kind in kinds), Decimal(0))


def _day_total(txns: list[CashTxn]) -> DayTotal:
    return DayTotal(cash_in=_sum(txns, CASH_IN), cash_out=_sum(txns, ("cash_out",)))


def windows(first: dt.date, last: dt.date) -> list[tuple[dt.date, dt.date, dt.date]]:
    """Every window of 3 consecutive business days that overlaps [first, last], including
    windows that start on a day without activity."""
    start = first
    for _ in range(2):  # back up two business days so windows ending on ``first`` count
        start -= dt.timedelta(days=1)
        while not is_business_day(start):
            start -= dt.timedelta(days=1)
    out = []
    while start <= last:
        second = next_business_day(start)
        out.append((start, second, next_business_day(second)))
        start = second
    return out


def _pattern(
    by_day: dict[dt.date, list[CashTxn]],
    kinds: tuple[str, ...],
    blocked: set[dt.date],
    enough: Callable[[Decimal], bool],
) -> dict[int, CashTxn]:
    """Transactions of ``kinds`` (keyed by identity, so each counts once) in any
    3-business-day window with >= 2 of them, no blocked day, and a total that is ``enough``."""
    hits: dict[int, CashTxn] = {}
    if not by_day:
        return hits
    for window in windows(min(by_day), max(by_day)):
        txns = [t for d in window for t in by_day.get(d, []) if t.kind in kinds]
        total = sum((t.amount for t in txns), Decimal(0))
        if len(txns) >= 2 and not blocked & set(window) and enough(total):
            hits.update({id(t): t for t in txns})
    return hits


class Structuring(Family):
    """CTR / structuring / SAR decisions over one customer's cash activity."""

    name = "structuring"
    Inputs = StructuringInputs
    Answer = StructuringAnswer
    instructions = (
        "Review this customer's activity under the US Bank Secrecy Act. Rules: a CTR is due "
        "for any business day on which the customer's cash-in total, or cash-out total, is "
        "more than $10,000.00 (31 CFR 1010.311/313; aggregate across branches, do not net "
        "in against out; only cash counts, and cash paid for a money order is cash in; "
        "ignore transactions for other customers; activity on a Saturday, Sunday or a bank "
        "holiday (marked in the table) belongs to the next business day). Structuring "
        "(31 CFR 1010.314) is indicated when (a) two or more cash-in transactions within 3 "
        "consecutive business days total more than $10,000.00 while none of those business "
        "days needs a CTR, or (b) two or more money orders bought with cash within 3 "
        "consecutive business days total $3,000.00 or more while no one of those business "
        "days reaches $3,000.00 of money orders (the 31 CFR 1010.415 record threshold). The "
        "structured amount is the total of the distinct transactions in every window that "
        "meets (a) or (b), 0.00 if none. The SAR threshold is met when structuring is "
        "indicated and the structured amount is $5,000.00 or more (31 CFR 1020.320(a)(2)). "
        "Report cash totals per business day, to the cent."
    )
    # Placeholders, not values: a model that copies the example must not score by luck.
    answer_example = (
        '{"ctr_due": <true|false>, "ctr_days": ["YYYY-MM-DD", ...], "structuring": '
        '<true|false>, "structured_amount": "<amount>", "sar_threshold_met": <true|false>, '
        '"daily_totals": {"YYYY-MM-DD": {"cash_in": "<amount>", "cash_out": "<amount>"}, '
        "...}}"
    )

    def sample(self, rng: random.Random, difficulty: int) -> tuple[dict, dict, list[str]]:
        x = _draw(rng, difficulty)
        answer = assess(x)
        rows = [
            {
                "txn_id": t.txn_id,
                "date": t.date.isoformat(),
                "branch": t.branch,
                "customer_id": t.customer_id,
                "kind": t.kind,
                "amount": str(t.amount),
            }
            for t in x.transactions
        ]
        inputs = {
            "customer_id": x.customer_id,
            "customer_name": x.customer_name,
            "transactions": rows,
        }
        return inputs, answer.model_dump(mode="json"), _steps(x, answer)

    def render(self, x: BaseModel) -> str:
        assert isinstance(x, StructuringInputs)
        rows = [
            f"Customer under review: {x.customer_name} ({x.customer_id})",
            "txn_id | date | weekday | branch | customer | type | amount (USD)",
        ]
        rows += [
            f"{t.txn_id} | {t.date} | {_weekday(t.date)} | {t.branch} | {t.customer_id} | "
            f"{LABELS[t.kind]} | {t.amount:,.2f}"
            for t in x.transactions
        ]
        return "\n".join(rows)

    def grade(self, inputs: BaseModel, truth: BaseModel, answer: BaseModel) -> Verdict:
        assert isinstance(truth, StructuringAnswer) and isinstance(answer, StructuringAnswer)
        checks = {
            "ctr_due": truth.ctr_due == answer.ctr_due,
            "ctr_days": set(truth.ctr_days) == set(answer.ctr_days),
            "structuring": truth.structuring == answer.structuring,
            "structured_amount": truth.structured_amount == answer.structured_amount,
            "sar": truth.sar_threshold_met == answer.sar_threshold_met,
        }
        want = {d: (v.cash_in, v.cash_out) for d, v in truth.daily_totals.items()}
        got = {d: (v.cash_in, v.cash_out) for d, v in answer.daily_totals.items()}
        day_credit = len({d for d in want if got.get(d) == want[d]}) / max(len(want | got), 1)
        score = (sum(checks.values()) + day_credit) / (len(checks) + 1)
        wrong = [k for k, ok in checks.items() if not ok] + (
            ["daily_totals"] if day_credit < 1 else []
        )
        return Verdict(
            score=score,
            correct=not wrong,
            detail="all exact" if not wrong else f"wrong: {', '.join(wrong)}",
        )


def _weekday(day: dt.date) -> str:
    name = bank_holiday(day)
    return f"{day:%a} (bank holiday: {name})" if name else f"{day:%a}"


# Start dates a few days before Federal Reserve holidays in 2026 (Jan 19, Feb 16, May 25,
# Jun 19, Sep 7), so the activity span covers the holiday.
HOLIDAY_WEEKS = [dt.date(2026, m, d) for m, d in ((1, 14), (2, 11), (5, 20), (6, 15), (9, 2))]


def _draw(rng: random.Random, difficulty: int) -> StructuringInputs:
    cust = f"C{rng.randrange(10**5):05d}"
    start = dt.date(2026, 1, 5) + dt.timedelta(weeks=rng.randrange(40))
    if difficulty >= 3 and rng.random() < 0.3:  # a week with a bank holiday in it
        start = rng.choice(HOLIDAY_WEEKS)
    n = [4, 7, 10, 16, 26][difficulty - 1]
    span = [2, 4, 6, 9, 12][difficulty - 1]
    modes = ["ctr", "structuring", "clean", "both"] + ["money_orders"] * (difficulty >= 2)
    mode = rng.choice(modes)
    txns = _money_orders(rng, start, cust) if mode == "money_orders" else []
    for _ in range(n):
        day = start + dt.timedelta(days=rng.randrange(span))
        if difficulty < 4 and day.weekday() >= 5:
            day -= dt.timedelta(days=2)
        kind = "cash_in"
        if difficulty >= 3:
            kinds = ["cash_in", "cash_out", "money_order", "wire", "cheque"]
            kind = rng.choices(kinds, [6, 2, 1, 1, 1])[0]
        who = cust if difficulty < 5 or rng.random() < 0.8 else f"C{rng.randrange(10**5):05d}"
        txns.append((day, kind, who, _amount(rng, mode, difficulty)))
    if difficulty >= 4:  # a borderline day at exactly the limit (not "more than")
        txns.append((start, "cash_in", cust, Decimal("10000.00")))
    txns.sort(key=lambda t: t[0])
    # model_construct: generated values are valid by construction (the reference-solution
    # test validates every dump against the schema), and skipping validation is faster.
    return StructuringInputs.model_construct(
        customer_id=cust,
        customer_name=rng.choice(PEOPLE),
        transactions=[
            CashTxn.model_construct(
                txn_id=f"T{i + 1:04d}",
                date=d,
                branch=rng.choice(BRANCHES[: 1 + difficulty]),
                customer_id=w,
                kind=k,
                amount=a,
            )
            for i, (d, k, w, a) in enumerate(txns)
        ],
    )


def _money_orders(
    rng: random.Random, start: dt.date, cust: str
) -> list[tuple[dt.date, str, str, Decimal]]:
    """Two or three money orders bought with cash on separate business days within three,
    each under $3,000: totals fall on both sides of $3,000 and of the $5,000 SAR line."""
    first = business_day(start)
    days = [first, next_business_day(first), next_business_day(next_business_day(first))]
    picked = sorted(rng.sample(days, rng.choice([2, 2, 3])))
    return [(d, "money_order", cust, Decimal(f"{rng.uniform(1200, 2999.99):.2f}")) for d in picked]


def _amount(rng: random.Random, mode: str, difficulty: int) -> Decimal:
    if mode in ("structuring", "both") and rng.random() < 0.6:
        value = rng.uniform(8000, 9990)
    elif mode in ("ctr", "both") and rng.random() < 0.3:
        value = rng.uniform(10001, 15000)
    else:
        value = rng.uniform(200, 4000)
    cents = difficulty >= 2
    return Decimal(f"{value:.2f}") if cents else Decimal(int(value // 100) * 100).quantize(CENT)


def _sum_line(label: str, amounts: list[Decimal]) -> str:
    """``label <<a + b>> = total`` through the calculator, or the single amount."""
    if not amounts:
        return f"{label} 0.00"
    if len(amounts) == 1:
        return f"{label} {amounts[0]:.2f}"
    return f"{label} {annotate(' + '.join(f'{v:.2f}' for v in amounts))}"


def _steps(x: StructuringInputs, a: StructuringAnswer) -> list[str]:
    kept = [
        t
        for t in x.transactions
        if t.customer_id == x.customer_id and t.kind in (*CASH_IN, "cash_out")
    ]
    moved = [t for t in kept if business_day(t.date) != t.date]
    head = [
        f"{len(kept)} kept, {len(x.transactions) - len(kept)} excluded (wires, cheques or "
        "other customers)",
        "money orders bought with cash count as cash in",
    ]
    head += [
        f"{t.txn_id} on {t.date} {_weekday(t.date)} belongs to {business_day(t.date)}"
        for t in moved
    ]
    head += [] if moved else ["no weekend or holiday items"]
    steps = [f"Keep cash transactions for {x.customer_id}:\n- " + "\n- ".join(head)]
    lines = []
    for day, tot in a.daily_totals.items():
        items = [t for t in kept if business_day(t.date).isoformat() == day]
        ins = [t.amount for t in items if t.kind in CASH_IN]
        outs = [t.amount for t in items if t.kind == "cash_out"]
        over = [k for k, v in (("in", tot.cash_in), ("out", tot.cash_out)) if v > CTR_LIMIT]
        lines.append(
            f"- {day}: {_sum_line('cash in', ins)}; {_sum_line('cash out', outs)}; "
            f"over 10000.00? {'yes (' + ', '.join(over) + ')' if over else 'no'}"
        )
    for k in range(0, len(lines), 3):
        steps.append(
            f"Daily totals ({k // 3 + 1}/{(len(lines) + 2) // 3}):\n" + "\n".join(lines[k : k + 3])
        )
    steps.append(
        f"CTR days: {', '.join(a.ctr_days) or 'none'}, so CTR due: {'yes' if a.ctr_due else 'no'}."
    )
    steps.append(_structuring_step(x, kept, a))
    why = "structuring is indicated and" if a.structuring else "no structuring, so not met whatever"
    steps.append(
        f"SAR threshold: {why} the structured amount {a.structured_amount:.2f} "
        f"{'>=' if a.structured_amount >= SAR_LIMIT else '<'} 5000.00: "
        f"{'met' if a.sar_threshold_met else 'not met'}."
    )
    return steps


def _structuring_step(x: StructuringInputs, kept: list[CashTxn], a: StructuringAnswer) -> str:
    by_day: dict[dt.date, list[CashTxn]] = {}
    for t in kept:
        by_day.setdefault(business_day(t.date), []).append(t)
    ctr = {dt.date.fromisoformat(d) for d in a.ctr_days}
    mi_days = {d for d, ts in by_day.items() if _sum(ts, ("money_order",)) >= MI_LIMIT}
    lines: list[str] = []
    hits: dict[int, CashTxn] = {}
    for rule, kinds, blocked, limit, cmp in (
        ("(a) cash in", CASH_IN, ctr, CTR_LIMIT, ">"),
        ("(b) money orders", ("money_order",), mi_days, MI_LIMIT, ">="),
    ):
        for window in windows(min(by_day), max(by_day)) if by_day else []:
            txns = [t for d in window for t in by_day.get(d, []) if t.kind in kinds]
            if len(txns) < 2 or blocked & set(window):
                continue
            total = sum((t.amount for t in txns), Decimal(0))
            if (total > limit) if cmp == ">" else (total >= limit):
                hits.update({id(t): t for t in txns})
                lines.append(
                    f"- {rule}, {window[0]} to {window[2]}: "
                    f"{_sum_line('total', [t.amount for t in txns])} {cmp} {limit:.2f}, no "
                    "blocking day: qualifies"
                )
    if not lines:
        return (
            "Structuring: no 3-business-day window has two or more cash-in items over "
            "10000.00 without a CTR day, nor money orders of 3000.00 or more without a "
            "3000.00 day: not indicated; structured amount 0.00."
        )
    return (
        "Structuring windows:\n"
        + "\n".join(lines[:6])
        + ("\n- (more windows)" if len(lines) > 6 else "")
        + "\n- "
        + _sum_line("structured amount (each transaction once):", [t.amount for t in hits.values()])
    )

"""Read a rendered structuring table back into ``StructuringInputs``, from the text alone.

The fidelity check recomputes the CTR/structuring/SAR truth from what the analyst sees,
and checks that every bank holiday the rule uses is marked in the table.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from domains.finance_risk.structuring import LABELS, CashTxn, StructuringInputs, bank_holiday

_HEAD = re.compile(r"Customer under review: (.*) \((C\d+)\)")
_KINDS = {label: kind for kind, label in LABELS.items()}


def read_structuring(text: str) -> StructuringInputs:
    """The customer and transactions of a rendered table; a holiday the calendar knows but
    the table does not mark (or the reverse) is an error."""
    lines = text.splitlines()
    name, cust = _HEAD.match(lines[0]).groups()  # type: ignore[union-attr]
    txns = []
    for line in lines[2:]:
        txn_id, day, weekday, branch, who, kind, amount = (p.strip() for p in line.split(" | "))
        date = dt.date.fromisoformat(day)
        if ("bank holiday" in weekday) != (bank_holiday(date) is not None):
            raise ValueError(f"{txn_id}: holiday marking {weekday!r} disagrees with {date}")
        txns.append(
            CashTxn(
                txn_id=txn_id,
                date=date,
                branch=branch,
                customer_id=who,
                kind=_KINDS[kind],
                amount=Decimal(amount.replace(",", "")),
            )
        )
    return StructuringInputs(customer_id=cust, customer_name=name, transactions=txns)

"""Read rendered finance cases back from the text alone, for the fidelity checks.

- Structuring: the table back into ``StructuringInputs``; every bank holiday the rule uses
  must be marked in the table.
- Credit: the exposure lines back into ``CreditInputs``, to recompute the IRB figures.
- AML: the transaction extract back into rows, and a shape classifier written from the
  prompt's typology definitions (not from the generator), so a pattern that does not look
  like its label, or amounts that do not follow the flow, show up.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from decimal import Decimal

from pydantic import BaseModel

from domains.finance_risk.credit import CreditInputs
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


def read_credit(text: str) -> CreditInputs:
    """An exposure from its rendered lines ("PD: 1.23%", "EAD: USD 1,000.00", ...)."""
    lines = dict(line.split(": ", 1) for line in text.splitlines()[1:])
    facility, obligor = re.match(r"Facility (\S+), obligor (.*)", text).groups()  # type: ignore[union-attr]
    currency, ead = lines["EAD"].split(" ", 1)
    sales = lines.get("Annual sales")
    elbe = lines.get("Best estimate of expected loss")
    return CreditInputs(
        exposure_id=facility,
        obligor=obligor,
        asset_class=lines["Asset class"].replace(" ", "_"),
        pd=float(lines["PD"].rstrip("%")) / 100,
        lgd=float(lines["LGD"].rstrip("%")) / 100,
        ead=float(ead.replace(",", "")),
        maturity=float(lines["Effective maturity"].removesuffix(" years")),
        sales_m=float(sales.split()[1]) if sales else None,
        currency=currency,
        elbe=float(elbe.rstrip("%")) / 100 if elbe else None,
    )


class Row(BaseModel):
    """One line of a rendered AML extract."""

    txn_id: str
    time: str  # "MM-DD HH:MM": sorts in time order within one extract
    src: str
    dst: str
    amount: float
    alert: str | None


def read_aml(text: str) -> tuple[str, str, list[Row]]:
    """(alert id, subject account, rows) of a rendered AML case."""
    lines = text.splitlines()
    alert, subject = re.match(r"Alert (\S+) on account (\S+)", lines[0]).groups()  # type: ignore[union-attr]
    start = next(i for i, line in enumerate(lines) if line.startswith("txn,time,"))
    cols = lines[start].split(",")
    rows = []
    for line in lines[start + 1 :]:
        v = dict(zip(cols, line.split(","), strict=True))
        tag = v.get("alert", "-")
        rows.append(
            Row(
                txn_id=v["txn"],
                time=v["time"],
                src=v["from"],
                dst=v["to"],
                amount=float(v["amount"]),
                alert=None if tag == "-" else tag,
            )
        )
    return alert, subject, rows


def classify(edges: list[tuple[str, str]]) -> str:
    """The typology whose prompt definition the directed edges fit, or "unknown"."""
    ins, outs = defaultdict(set), defaultdict(set)
    for s, d in edges:
        outs[s].add(d)
        ins[d].add(s)
    nodes = set(ins) | set(outs)
    sources = {n for n in nodes if not ins[n]}
    sinks = {n for n in nodes if not outs[n]}
    middle = nodes - sources - sinks
    one_in_one_out = all(len(ins[n]) <= 1 and len(outs[n]) <= 1 for n in nodes)
    if not sources and one_in_one_out and len(edges) == len(nodes):
        return "cycle" if _connected(edges, nodes) else "unknown"
    if not middle:
        return _two_layer(sources, sinks, edges)
    single = len(sources) == len(sinks) == 1
    if single and len(middle) >= 2 and all(ins[n] == sources and outs[n] == sinks for n in middle):
        return "scatter_gather"
    if one_in_one_out and single and _connected(edges, nodes):
        return "random"
    if len(middle) == 1 and len(sources) >= 2 and len(sinks) >= 2:
        hub = next(iter(middle))
        full = all(outs[s] == {hub} for s in sources) and outs[hub] == sinks
        return "gather_scatter" if full else "unknown"
    full = _complete(sources, middle, edges) and _complete(middle, sinks, edges)
    layered = len(edges) == len(sources) * len(middle) + len(middle) * len(sinks)
    return "stack" if full and layered and len(sources) >= 2 else "unknown"


def _two_layer(sources: set, sinks: set, edges: list) -> str:
    if len(sources) == 1 and len(sinks) >= 2:
        return "fan_out"
    if len(sinks) == 1 and len(sources) >= 2:
        return "fan_in"
    full = _complete(sources, sinks, edges) and len(edges) == len(sources) * len(sinks)
    return "bipartite" if full else "unknown"


def _complete(a: set, b: set, edges: list) -> bool:
    pairs = set(edges)
    return all((s, d) in pairs for s in a for d in b)


def _connected(edges: list, nodes: set) -> bool:
    seen, todo = set(), [next(iter(nodes))]
    near = defaultdict(set)
    for s, d in edges:
        near[s].add(d)
        near[d].add(s)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(near[n] - seen)
    return seen == nodes


def forwarding_ratios(rows: list[Row], origin: str | None = None) -> list[float]:
    """For each account that receives and pays on (except a cycle's ``origin``, which pays
    first), what it paid on over what it received: the prompt says about 0.9 (a ~10% margin
    per hop). An account that pays before all its money arrived gets ratio inf."""
    ratios = []
    for acct in ({r.src for r in rows} & {r.dst for r in rows}) - {origin}:
        paid = [r for r in rows if r.src == acct]
        got = [r for r in rows if r.dst == acct]
        if max(g.time for g in got) >= min(p.time for p in paid):
            ratios.append(float("inf"))
            continue
        ratios.append(sum(p.amount for p in paid) / sum(g.amount for g in got))
    return ratios

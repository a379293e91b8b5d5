"""AML typology detection in a transaction chain (AMLSim's eight typologies).

A case is an alert on a subject account with KYC, plus 20-200 transactions in which one
laundering pattern hides among benign activity. Amounts shrink about 10% per hop, hops are
hours apart, formats are mixed. Truth: the typology, its member accounts and the
laundering transaction ids. At difficulty 1-2 laundering transactions carry the alert id
(as AMLSim exports do); from 3 on they do not, members also transact benignly (4+) and
benign amounts overlap the laundering ones (5).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from domains.base import Family, Verdict, set_f1
from domains.calc import annotate, evaluate
from domains.parsing import to_str_list
from domains.schema import MAX_ITEMS, Record

TYPOLOGIES = (
    "fan_out",
    "fan_in",
    "cycle",
    "bipartite",
    "stack",
    "random",
    "scatter_gather",
    "gather_scatter",
)
# "none": no laundering pattern in the extract (negative alerts drawn from real-format data;
# the generator always plants one pattern)
LABELS = (*TYPOLOGIES, "none")
FORMATS = ("ACH", "Wire", "Cash", "Cheque", "Credit Card", "Bitcoin")  # what the generator draws
# every channel a transaction may carry: IBM's AML data also books "Reinvestment"
ALL_FORMATS = (*FORMATS, "Reinvestment")
MAX_TRANSACTIONS = 200  # the family's size limit: the largest extract the generator writes
OCCUPATIONS = (
    "import/export trader",
    "restaurant owner",
    "consultant",
    "student",
    "car dealer",
    "software engineer",
    "real-estate agent",
)
T0 = dt.datetime(2026, 3, 2, 8, 0)


class Txn(Record):
    txn_id: str = Field(description="Transaction id.")
    timestamp: dt.datetime = Field(description="Booking time.")
    from_account: str = Field(description="Originator account.")
    to_account: str = Field(description="Beneficiary account.")
    amount: float = Field(gt=0, description="Amount (positive).")
    currency: str = Field(default="USD", description="ISO currency.")
    payment_format: Literal[ALL_FORMATS] = Field(description="Payment channel.")  # type: ignore[valid-type]
    alert_id: str | None = Field(default=None, description="Alert id if flagged by the system.")


class KYC(Record):
    name: str
    customer_type: Literal["individual", "business"]
    occupation: str
    country: str
    expected_monthly_volume: float = Field(ge=0)


class Origin(Record):
    """Where an alert read from a public dataset came from, and how its truth was made."""

    dataset: str = Field(description="The source dataset, e.g. ibm_aml.")
    line: int | None = Field(
        default=None, description="The patterns file's line that opens the attempt."
    )
    typology: str | None = Field(default=None, description="The dataset's own typology name.")
    detail: str | None = Field(default=None, description="The block header's detail suffix.")
    truth: str = Field(description="How the truth was made, in words.")


class AMLInputs(Record):
    """Alert, subject KYC and the transaction extract."""

    alert_id: str = Field(description="Alert id.")
    subject_account: str = Field(description="Account the alert fired on.")
    kyc: KYC | None = Field(
        default=None, description="Subject's KYC profile (None: the source has none)."
    )
    entity_type: str | None = Field(
        default=None,
        max_length=40,
        description="The subject's kind of legal entity where the source names it "
        "(e.g. 'Corporation'), never the entity's name.",
    )
    transactions: list[Txn] = Field(
        min_length=1, max_length=MAX_ITEMS, description="Transaction extract."
    )
    origin: Origin | None = Field(
        default=None, description="The dataset a case was read from (None: the generator)."
    )


class AMLAnswer(Record):
    typology: Literal[LABELS] = Field(description="AMLSim typology label, or none.")  # type: ignore[valid-type]
    accounts: list[str] = Field(max_length=MAX_ITEMS, description="Member accounts of the pattern.")
    transactions: list[str] = Field(max_length=MAX_ITEMS, description="Laundering transaction ids.")

    @field_validator("typology", mode="before")
    @classmethod
    def _label(cls, value: Any) -> str:
        return str(value).strip().lower().replace("-", "_").replace(" ", "_")

    @field_validator("accounts", "transactions", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        return sorted(set(to_str_list(value)))


def pattern_edges(typology: str, members: list[str], rng: random.Random) -> list[tuple]:
    """(src, dst, hop) edges of a typology over its member accounts."""
    m, k = members, len(members)
    if typology == "fan_out":
        return [(m[0], d, 0) for d in m[1:]]
    if typology == "fan_in":
        return [(s, m[0], 0) for s in m[1:]]
    if typology == "cycle":
        return [(m[i], m[(i + 1) % k], i) for i in range(k)]
    if typology == "bipartite":
        half = k // 2
        return [(s, d, 0) for s in m[:half] for d in m[half:]]
    if typology == "stack":  # AMLSim: n//3 senders, n//3 intermediaries, the rest receivers
        third = k // 3
        a, b, c = m[:third], m[third : 2 * third], m[2 * third :]
        return [(s, d, 0) for s in a for d in b] + [(s, d, 1) for s in b for d in c]
    if typology == "random":  # a chain from the subject through the others in random order
        rest = m[1:]
        rng.shuffle(rest)
        order = [m[0], *rest]
        return [(order[i], order[i + 1], i) for i in range(k - 1)]
    if typology == "scatter_gather":
        return [(m[0], x, 0) for x in m[2:]] + [(x, m[1], 1) for x in m[2:]]
    # gather_scatter (AMLSim): (n - 1) // 2 sources -> hub m[0] -> the rest
    split = 1 + (k - 1) // 2
    return [(s, m[0], 0) for s in m[1:split]] + [(m[0], d, 1) for d in m[split:]]


MEMBER_COUNTS = {
    "fan_out": (4, 7),
    "fan_in": (4, 7),
    "cycle": (3, 6),
    "bipartite": (4, 6),
    "stack": (6, 9),
    "random": (4, 7),
    "scatter_gather": (5, 7),
    "gather_scatter": (5, 8),
}


class AMLTypology(Family):
    """Name the laundering typology, its accounts and its transactions."""

    name = "aml_typology"
    Inputs = AMLInputs
    Answer = AMLAnswer
    instructions = (
        "You are reviewing a transaction-monitoring alert. Find the one money-laundering "
        "pattern among the transactions and name its typology, one of: fan_out (one account "
        "pays many), fan_in (many pay one), cycle (funds return to the origin), bipartite "
        "(a group of payers pays a group of payees), stack (two bipartite layers in a row), "
        "random (funds hop along a chain of accounts without returning), scatter_gather "
        "(one pays many intermediaries who all pay one), gather_scatter (many pay one hub "
        "that pays many). Laundered amounts shrink about 10% per hop. List every account in "
        "the pattern and every laundering transaction id. If no pattern is present, answer "
        "the typology none with empty lists."
    )
    # Placeholders, not values: a model that copies the example must not score by luck.
    answer_example = (
        '{"typology": "<label>", "accounts": ["<account id>", ...], '
        '"transactions": ["<txn id>", ...]}'
    )

    def sample(self, rng: random.Random, difficulty: int) -> tuple[dict, dict, list[str]]:
        typology = rng.choice(TYPOLOGIES)
        lo, hi = MEMBER_COUNTS[typology]
        pool = [f"A{n}" for n in rng.sample(range(1000, 9999), 70)]
        members = pool[: rng.randint(lo, hi)]
        edges = pattern_edges(typology, members, rng)
        alert = f"ALRT-{rng.randrange(10**6):06d}"
        total = [20, 40, 80, 140, 200][difficulty - 1]
        rows = _laundering_rows(edges, rng, alert if difficulty <= 2 else None)
        rows += _benign_rows(total - len(rows), pool, members, rng, difficulty)
        rows.sort(key=lambda r: r["timestamp"])
        for i, r in enumerate(rows):
            r["txn_id"] = f"T{i + 1:04d}"
        bad = sorted(r["txn_id"] for r in rows if r.pop("_laundering"))
        for r in rows:
            r["timestamp"] = r["timestamp"].isoformat()
        inputs = {
            "alert_id": alert,
            "subject_account": members[0],
            "kyc": _kyc(rng),
            "transactions": rows,
        }
        truth = {"typology": typology, "accounts": sorted(members), "transactions": bad}
        return inputs, truth, reference_steps(typology, members, bad, rows, difficulty)

    def render(self, x: BaseModel) -> str:
        assert isinstance(x, AMLInputs)
        currencies = {t.currency for t in x.transactions}
        tagged = any(t.alert_id for t in x.transactions)
        head = [
            f"Alert {x.alert_id} on account {x.subject_account}",
            _kyc_line(x),
            f"Amounts in {currencies.pop()}." if len(currencies) == 1 else "",
            "txn,time,from,to,amount,format"
            + (",currency" if currencies else "")
            + (",alert" if tagged else ""),
        ]
        body = [
            f"{t.txn_id},{t.timestamp:%m-%d %H:%M},{t.from_account},{t.to_account},"
            f"{t.amount:.2f},{t.payment_format}"
            + (f",{t.currency}" if currencies else "")
            + (f",{t.alert_id or '-'}" if tagged else "")
            for t in x.transactions
        ]
        return "\n".join([line for line in head if line] + body)

    def grade(self, inputs: BaseModel, truth: BaseModel, answer: BaseModel) -> Verdict:
        assert isinstance(truth, AMLAnswer) and isinstance(answer, AMLAnswer)
        label = float(truth.typology == answer.typology)
        acc = set_f1(set(truth.accounts), set(answer.accounts))
        txn = set_f1(set(truth.transactions), set(answer.transactions))
        return Verdict(
            score=(label + acc + txn) / 3,
            correct=label == acc == txn == 1.0,
            detail=f"label {'ok' if label else 'wrong'}; accounts F1 {acc:.2f}; "
            f"transactions F1 {txn:.2f}",
        )


def _kyc_line(x: AMLInputs) -> str:
    k = x.kyc
    if k is None:
        kind = f" Entity type: {x.entity_type}." if x.entity_type else ""
        return "KYC: not provided by the source." + kind
    return (
        f"KYC: {k.name}, {k.customer_type}, {k.occupation}, {k.country}, expected "
        f"monthly volume USD {k.expected_monthly_volume:,.0f}"
    )


MARGIN = (0.08, 0.12)  # what an intermediary keeps per hop: "about 10%"


def edge_amounts(edges: list[tuple], rng: random.Random) -> list[float]:
    """Amounts that follow the flow: hop-0 edges share the laundered sum; an account at a
    later hop forwards what it received at the hop before, less a margin in MARGIN, split
    over its outgoing edges (AMLSim forwards the received total minus a margin)."""
    base = rng.uniform(20_000, 250_000)
    width = max(sum(1 for e in edges if e[2] == 0), 1)
    received: dict[tuple[str, int], float] = {}
    amounts: list[float] = [0.0] * len(edges)
    for hop in sorted({e[2] for e in edges}):
        out: dict[str, list[int]] = {}
        for i, (src, _, h) in enumerate(edges):
            if h == hop:
                out.setdefault(src, []).append(i)
        for src, idx in out.items():
            inflow = received.get((src, hop - 1))
            total = (
                base / width * len(idx) if inflow is None else inflow * (1 - rng.uniform(*MARGIN))
            )
            weights = [rng.uniform(0.9, 1.1) for _ in idx]
            for i, w in zip(idx, weights, strict=True):
                amounts[i] = round(total * w / sum(weights), 2)
                key = (edges[i][1], hop)
                received[key] = received.get(key, 0.0) + amounts[i]
    return amounts


def _laundering_rows(edges: list[tuple], rng: random.Random, alert: str | None) -> list[dict]:
    start = T0 + dt.timedelta(days=rng.randrange(20), hours=rng.randrange(10))
    fmt = rng.choice(FORMATS)
    # each hop starts 4-30 hours after the one before and lasts under 4 hours, so money is
    # always forwarded after it arrived
    hops = max(e[2] for e in edges) + 1
    gaps = [0] + [rng.randint(4, 30) for _ in range(hops - 1)]
    offsets = [sum(gaps[: h + 1]) for h in range(hops)]
    rows = []
    for (src, dst, hop), amount in zip(edges, edge_amounts(edges, rng), strict=True):
        when = start + dt.timedelta(hours=offsets[hop], minutes=rng.randrange(240))
        rows.append(
            {
                "timestamp": when,
                "from_account": src,
                "to_account": dst,
                "amount": amount,
                "currency": "USD",
                "payment_format": fmt if rng.random() < 0.7 else rng.choice(FORMATS),
                "alert_id": alert,
                "_laundering": True,
            }
        )
    return rows


def _benign_rows(
    n: int, pool: list[str], members: list[str], rng: random.Random, difficulty: int
) -> list[dict]:
    """Background activity, drawn as numpy arrays (one case can hold ~200 rows)."""
    if n <= 0:
        return []
    others = [a for a in pool if a not in members]
    parties = others + (members if difficulty >= 4 else [])
    scale = 40_000 if difficulty >= 5 else 2_500
    g = np.random.default_rng(rng.getrandbits(64))
    src = g.integers(0, len(parties), n)
    dst = (src + g.integers(1, len(parties), n)) % len(parties)  # never equal to src
    minutes = g.integers(0, 30 * 24 * 60, n).tolist()
    amounts = np.round(g.lognormal(0.0, 0.8, n) * (scale / 2), 2).tolist()
    formats = g.integers(0, len(FORMATS), n).tolist()
    return [
        {
            "timestamp": T0 + dt.timedelta(minutes=m),
            "from_account": parties[s],
            "to_account": parties[d],
            "amount": a,
            "currency": "USD",
            "payment_format": FORMATS[f],
            "alert_id": None,
            "_laundering": False,
        }
        for m, s, d, a, f in zip(minutes, src.tolist(), dst.tolist(), amounts, formats, strict=True)
    ]


def _kyc(rng: random.Random) -> dict:
    business = rng.random() < 0.5
    return {
        "name": rng.choice(
            [
                "Halvorsen Trading LLC",
                "R. Mendes",
                "Sato Imports KK",
                "A. Novak",
                "Blue Lotus Cafe",
                "K. Mensah",
            ]
        ),
        "customer_type": "business" if business else "individual",
        "occupation": rng.choice(OCCUPATIONS),
        "country": rng.choice(["US", "PA", "CY", "AE"]),
        "expected_monthly_volume": float(rng.randrange(2, 200) * 1000),
    }


def reference_steps(
    typology: str, members: list[str], bad: list[str], rows: list[dict], difficulty: int
) -> list[str]:
    """The reference solution's steps: the laundering transactions (``bad``, in time
    order) among ``rows``, the amounts per hop through the calculator, the accounts and the
    typology. Also used for alerts read from IBM's AML data (``ibm_aml``)."""
    by_id = {r["txn_id"]: r for r in rows}
    chain = "; ".join(
        f"{t}: {by_id[t]['from_account']}->{by_id[t]['to_account']} {by_id[t]['amount']:,.2f}"
        for t in bad
    )
    how = (
        "the transactions tagged with the alert id"
        if difficulty <= 2
        else f"transfers linked to subject {members[0]} whose amounts shrink ~10% per hop"
    )
    return [
        f"Start from the subject account {members[0]} and collect {how}.",
        f"Laundering transactions in time order: {chain}.",
        *_hop_steps([by_id[t] for t in bad]),
        f"Accounts involved: {', '.join(sorted(members))}.",
        f"The flow structure matches the {typology} typology.",
    ]


def _hop_steps(rows: list[dict]) -> list[str]:
    """What each intermediary received and paid on, through the calculator: the ~10% margin
    per hop is what separates the pattern from benign traffic."""
    lines = []
    payers = {r["from_account"] for r in rows}
    for acct in dict.fromkeys(r["to_account"] for r in rows if r["to_account"] in payers):
        got = [r["amount"] for r in rows if r["to_account"] == acct]
        paid = [r["amount"] for r in rows if r["from_account"] == acct]
        received, forwarded = _total(got), _total(paid)
        if not received or not forwarded:
            continue
        ratio = evaluate(f"{forwarded[1]} / {received[1]}")
        lines.append(
            f"- {acct}: received {received[0]}; paid on {forwarded[0]}; "
            f"share forwarded {annotate(f'{forwarded[1]} / {received[1]}')}"
            if ratio.ok
            else f"- {acct}: received {received[0]}; paid on {forwarded[0]}"
        )
    if not lines:
        return []
    return ["Amounts along the pattern (each hop keeps about 10%):\n" + "\n".join(lines[:4])]


def _total(amounts: list[float]) -> tuple[str, str] | None:
    """(text, value) of a sum through the calculator, or the single amount."""
    if not amounts:
        return None
    if len(amounts) == 1:
        return f"{amounts[0]:.2f}", f"{amounts[0]:.2f}"
    expr = " + ".join(f"{a:.2f}" for a in amounts)
    return annotate(expr), evaluate(expr).result or "0"

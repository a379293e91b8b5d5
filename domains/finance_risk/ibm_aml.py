"""IBM's synthetic AML transactions as alert cases, read as the dataset ships them.

IBM's AML data (Altman et al., "Realistic Synthetic Financial Transactions for Anti-Money
Laundering Models", NeurIPS 2023 Datasets and Benchmarks) comes as three files per set
(HI-Small has about 5 million transactions, HI-Large about 180 million):

- ``*_Trans.csv``: ``COLUMNS``, with the ``Account`` column name twice (originator, then
  beneficiary) and bank ids without zero padding;
- ``*_Patterns.txt``: one block per laundering attempt, opened by ``BEGIN LAUNDERING ATTEMPT
  - <TYPOLOGY>[: detail]`` and closed by ``END LAUNDERING ATTEMPT - <TYPOLOGY>``, holding the
  attempt's transactions in the CSV's column order with no header and zero-padded bank ids;
- ``*_accounts.csv`` (optional): ``ACCOUNT_COLUMNS``.

This module is the format: the column names, the one table from IBM's typology names to
ponder's labels (``TYPOLOGY``), the patterns-file parser, and the assembly of one alert case
from its transactions. Streaming the files is ``tasks.ibm_aml``'s job. Account numbers are
customer identifiers: they stay in the lake's inputs, are masked like any identifier on the
way out (``domains.finance_risk`` names their pattern), and case ids are hashes that never
show them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from domains.base import format_solution
from domains.finance_risk.aml import reference_steps

COLUMNS = (
    "Timestamp",
    "From Bank",
    "Account",
    "To Bank",
    "Account",
    "Amount Received",
    "Receiving Currency",
    "Amount Paid",
    "Payment Currency",
    "Payment Format",
    "Is Laundering",
)
# the names ponder gives COLUMNS, position by position (the file's own names repeat)
FIELDS = (
    "timestamp",
    "from_bank",
    "from_account",
    "to_bank",
    "to_account",
    "amount_received",
    "receiving_currency",
    "amount_paid",
    "payment_currency",
    "payment_format",
    "is_laundering",
)
ACCOUNT_COLUMNS = ("Bank Name", "Bank ID", "Account Number", "Entity ID", "Entity Name")
TIME_FORMAT = "%Y/%m/%d %H:%M"
# IBM's typology name -> ponder's aml_typology label (domains.finance_risk.aml.TYPOLOGIES)
TYPOLOGY: dict[str, str] = {
    "FAN-OUT": "fan_out",
    "FAN-IN": "fan_in",
    "CYCLE": "cycle",
    "GATHER-SCATTER": "gather_scatter",
    "SCATTER-GATHER": "scatter_gather",
    "STACK": "stack",
    "RANDOM": "random",
    "BIPARTITE": "bipartite",
}
DIFFICULTY = 4  # no alert ids on the transactions; members also transact benignly
_BEGIN = re.compile(r"^BEGIN LAUNDERING ATTEMPT - ([^:]+?)\s*(?::\s*(.*))?$")
_END = re.compile(r"^END LAUNDERING ATTEMPT - (.+?)\s*$")


@dataclass
class Attempt:
    """One block of the patterns file: its typology, where it opened, and its lines as
    match keys (``key``) into the transactions file."""

    typology: str
    name: str
    detail: str | None
    line: int
    keys: list[tuple[Any, ...]] = field(default_factory=list)


def key(
    timestamp: dt.datetime,
    from_bank: int,
    from_account: str,
    to_bank: int,
    to_account: str,
    amount_paid: float,
) -> tuple[Any, ...]:
    """What identifies a transaction across the two files (banks as integers: the patterns
    file pads them with zeros, the CSV does not)."""
    return (timestamp, from_bank, from_account, to_bank, to_account, round(amount_paid, 2))


def parse_patterns(lines: Iterable[str]) -> tuple[list[Attempt], list[dict[str, Any]]]:
    """The attempts of a patterns file, and the refused blocks as ``{"line", "reason",
    "typology"}``: an unterminated block, an END that names another typology, a typology
    not in ``TYPOLOGY``, or a transaction line that does not parse."""
    attempts: list[Attempt] = []
    refused: list[dict[str, Any]] = []
    open_: Attempt | None = None
    broken: str | None = None
    for n, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        begin, end = _BEGIN.match(line), _END.match(line)
        if begin:
            if open_ is not None:
                refused.append(_unterminated(open_))
            open_, broken = _opened(begin, n), None
        elif open_ is None:
            why = "a line outside any BEGIN/END LAUNDERING ATTEMPT block"
            refused.append({"line": n, "typology": None, "reason": why})
        elif end:
            refused += _closed(open_, end.group(1), broken, attempts)
            open_ = None
        elif broken is None:
            try:
                open_.keys.append(pattern_key(line))
            except ValueError as err:
                broken = f"line {n}: {err}"
    if open_ is not None:
        refused.append(_unterminated(open_))
    return attempts, refused


def _opened(begin: re.Match[str], n: int) -> Attempt:
    name = begin.group(1).strip().upper()
    return Attempt(typology=TYPOLOGY.get(name, ""), name=name, detail=begin.group(2), line=n)


def _unterminated(a: Attempt) -> dict[str, Any]:
    return {"line": a.line, "typology": a.name,
            "reason": f"unterminated block: BEGIN LAUNDERING ATTEMPT - {a.name} at line "
            f"{a.line} has no END line"}  # fmt: skip


def _closed(
    a: Attempt, end_name: str, broken: str | None, attempts: list[Attempt]
) -> list[dict[str, Any]]:
    """[] and the attempt kept, or its one refusal."""
    reason = None
    if end_name.strip().upper() != a.name:
        reason = f"the block opened as {a.name} closes as {end_name.strip()}"
    elif not a.typology:
        reason = f"typology not mapped: {a.name} (ponder maps {sorted(TYPOLOGY)})"
    elif broken:
        reason = broken
    elif not a.keys:
        reason = "the block holds no transactions"
    if reason:
        return [{"line": a.line, "typology": a.name, "reason": reason}]
    attempts.append(a)
    return []


def pattern_key(line: str) -> tuple[Any, ...]:
    """A patterns-file transaction line as its ``key``; ValueError names the bad field."""
    cells = [c.strip() for c in line.split(",")]
    if len(cells) != len(COLUMNS):
        raise ValueError(f"{len(cells)} fields, expected {len(COLUMNS)} ({', '.join(COLUMNS)})")
    v = dict(zip(FIELDS, cells, strict=True))
    try:
        when = dt.datetime.strptime(v["timestamp"], TIME_FORMAT)
    except ValueError:
        raise ValueError("Timestamp is not YYYY/MM/DD HH:MM") from None  # the cell never shown
    try:
        banks = int(v["from_bank"]), int(v["to_bank"])
        paid = float(v["amount_paid"])
    except ValueError:
        raise ValueError("From Bank, To Bank and Amount Paid must be numbers") from None
    if not v["from_account"] or not v["to_account"]:
        raise ValueError("Account is empty")
    return key(when, banks[0], v["from_account"], banks[1], v["to_account"], paid)


def subject_of(rows: list[dict[str, Any]]) -> str:
    """The account the alert fires on: the one in most of the attempt's transactions (the
    hub of a fan, the origin of a chain), the earliest on a tie."""
    count: dict[str, int] = {}
    for r in sorted(rows, key=lambda r: (r["timestamp"], r["row"])):
        for acct in (r["from_account"], r["to_account"]):
            count[acct] = count.get(acct, 0) + 1
    return max(count, key=lambda a: count[a])  # max keeps the first of equal counts


def stable_id(*parts: Any) -> str:
    """A hash of the parts: the same file gives the same id, and no account shows."""
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).hexdigest()


def txn(r: dict[str, Any]) -> dict[str, Any]:
    """One transactions-file row as a ``Txn`` dump: the amount paid in the payment currency,
    the id from the row number (``T<row>``), so a reviewer can find it in the file."""
    return {
        "txn_id": f"T{r['row']}",
        "timestamp": r["timestamp"].isoformat(),
        "from_account": r["from_account"],
        "to_account": r["to_account"],
        "amount": r["amount_paid"],
        "currency": r["payment_currency"],
        "payment_format": r["payment_format"],
    }


def alert_case(
    *,
    attempt: Attempt | None,
    subject: str,
    bad: list[dict[str, Any]],
    context: list[dict[str, Any]],
    entity_type: str | None,
    case_key: str,
) -> dict[str, Any]:
    """One alert as a case dump: the attempt's transactions (``bad``; none for a negative
    alert) among the ``context`` rows, the truth from the patterns file, and a reference
    solution derived from it."""
    order = lambda r: (r["timestamp"], r["row"])  # noqa: E731
    txns = [txn(r) for r in sorted(bad + context, key=order)]
    bad_ids = [f"T{r['row']}" for r in sorted(bad, key=order)]  # in time order
    members = sorted({a for r in bad for a in (r["from_account"], r["to_account"])})
    typology = attempt.typology if attempt else "none"
    inputs = {
        "alert_id": f"ALRT-{int(case_key[:8], 16) % 10**6:06d}",
        "subject_account": subject,
        "kyc": None,
        "entity_type": entity_type,
        "transactions": txns,
        "origin": _origin(attempt),
    }
    truth = {"typology": typology, "accounts": members, "transactions": bad_ids}
    return {
        "id": f"ibm-aml-{case_key}",
        "domain": "finance_risk",
        "family": "aml_typology",
        "difficulty": DIFFICULTY,
        "inputs": inputs,
        "truth": truth,
        "reference": _reference(typology, subject, members, bad_ids, txns),
    }


def _origin(attempt: Attempt | None) -> dict[str, Any]:
    if attempt is None:
        how = ("negative alert: a window around an account with no laundering transaction "
               "in the file; truth none")  # fmt: skip
        return {"dataset": "ibm_aml", "truth": how}
    return {
        "dataset": "ibm_aml",
        "line": attempt.line,
        "typology": attempt.name,
        "detail": attempt.detail,
        "truth": "derived: the patterns file's attempt, its lines matched to the "
        "transactions file's rows",
    }


def _reference(
    typology: str, subject: str, members: list[str], bad: list[str], txns: list[dict[str, Any]]
) -> str:
    """Reference steps in the generator's format (``aml.reference_steps``); the case's origin marks
    them as derived from the patterns file."""
    if typology == "none":
        steps = [
            f"Start from the subject account {subject} and collect transfers linked to it.",
            "No chain of transfers whose amounts shrink about 10% per hop links the subject "
            "to other accounts; the activity is ordinary.",
            "No laundering pattern: the typology is none, with no accounts or transactions.",
        ]
    else:
        steps = reference_steps(typology, members, bad, txns, DIFFICULTY)
        steps[0] = f"Start from the subject account {subject} and collect transfers linked " \
            "to it whose amounts shrink ~10% per hop."  # fmt: skip
    return format_solution(steps, {"typology": typology, "accounts": members, "transactions": bad})

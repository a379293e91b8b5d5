"""IBM's AML data streamed into alert cases: a file of 180 million rows is never held whole.

``domains.finance_risk.ibm_aml`` knows the format; this module moves the rows. The
transactions CSV is read once, as a polars streaming scan, into a typed Parquet copy in a
scratch folder (every cell that does not parse gives the row a quarantine reason). Every
later pass reads that copy and keeps only the few rows it needs:

1. the rows that match a patterns-file line (a join on timestamp, banks, accounts and amount
   paid), so each attempt's transactions get their ids; and the accounts of rows flagged as
   laundering;
2. negative alerts' subjects: rows ranked by a hash of their row number and the seed, whose
   accounts never take part in laundering;
3. the rows of the alerts' subjects and members inside each alert's window, and then those
   of their direct counterparties: the context an analyst would pull.

Each alert keeps its attempt's transactions and a seeded sample of its context, up to
``max_transactions``. Memory follows the alerts' rows, not the file's size.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from domains.errors import PonderError
from domains.finance_risk import ibm_aml as fmt
from domains.finance_risk.aml import ALL_FORMATS, MAX_TRANSACTIONS
from domains.schema import MAX_ITEMS

# the accounts file's kinds of entity; any other Entity Name might be a person's name
ENTITY_TYPES = frozenset(
    {"Corporation", "Partnership", "Sole Proprietorship", "Person", "Individual"}
)
_HASH = 2654435761  # Knuth's multiplicative hash: a stable order of rows for a seed


class IBMAmlOptions(BaseModel):
    """How alerts are cut from IBM's AML data (collect's ``ibm_aml`` source)."""

    model_config = ConfigDict(extra="forbid")

    negative_ratio: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="Negative alerts (windows around accounts with no laundering) per "
        "laundering attempt.",
    )
    window_pad_hours: float = Field(
        default=24,
        ge=0,
        le=24 * 365,
        description="Hours added before the first and after the last transaction of an "
        "attempt: the alert's window, in which context rows are pulled.",
    )
    max_transactions: int = Field(
        default=MAX_TRANSACTIONS,
        ge=2,
        le=MAX_ITEMS,
        description="Most transactions in one alert (the attempt's own always stay; the "
        "context is sampled to fill the rest).",
    )
    seed: int = Field(
        default=0, ge=0, le=2**32 - 1, description="Seed of negative draws and context samples."
    )


@dataclass
class Files:
    """The files of one IBM AML set in a folder."""

    transactions: Path
    patterns: Path
    accounts: Path | None


@dataclass
class Alerts:
    """What ``read_ibm_aml`` made: (patterns-file line or row number, case dump) pairs,
    quarantine rows, and counts for the summary."""

    cases: list[tuple[int | None, dict[str, Any]]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    rows_in: int = 0
    attempts: int = 0
    negatives: int = 0


def find_files(folder: Path) -> Files:
    """The set's ``*Trans*.csv``, ``*Patterns*.txt`` and optional ``*accounts*.csv``; a
    folder without exactly one of the first two is an error that lists what it holds."""
    if not folder.is_dir():
        raise PonderError(
            "path",
            f"{folder} is not a folder",
            "give the folder holding the set's *_Trans.csv and *_Patterns.txt",
        )
    names = sorted(p.name for p in folder.iterdir() if p.is_file())

    def one(pattern: str, suffix: str, required: bool) -> Path | None:
        hits = [n for n in names if pattern in n.lower() and n.lower().endswith(suffix)]
        if len(hits) == 1:
            return folder / hits[0]
        if hits or required:
            raise PonderError(
                "path",
                f"{folder} holds {len(hits)} files like *{pattern}*{suffix} ({hits}); "
                f"found {names}",
                "put one IBM AML set (e.g. HI-Small_Trans.csv, HI-Small_Patterns.txt and "
                "optionally HI-Small_accounts.csv) in a folder of its own",
            )
        return None

    trans, patterns = one("trans", ".csv", True), one("patterns", ".txt", True)
    assert trans is not None and patterns is not None
    return Files(trans, patterns, one("accounts", ".csv", False))


def check_header(path: Path, expected: tuple[str, ...], name: str) -> None:
    """A file-level error naming the columns expected and found, unless the first line
    holds exactly ``expected`` (IBM's transactions repeat ``Account``, so position counts)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        found = tuple(c.strip() for c in next(csv.reader(fh), []))
    if found != expected:
        raise PonderError(
            "path",
            f"{path.name} is not an IBM AML {name} file: expected the columns "
            f"{list(expected)}; found {list(found)}",
            f"give the {name} file as it ships, header line included",
        )


def typed_copy(trans: Path, out: Path) -> None:
    """The transactions CSV, streamed once into Parquet: typed columns, the 1-based data
    row number ``row``, and ``reason`` (why the row cannot be read; null when it can)."""
    # IBM's files never quote: a quote is a character of its cell (an unclosed one must not
    # swallow the rest of the file), and a 12th field is read into "extra" to refuse the row
    names = (*fmt.FIELDS, "extra")
    raw = pl.scan_csv(trans, has_header=False, skip_rows=1, row_index_name="row",
                      row_index_offset=1, schema=dict.fromkeys(names, pl.String),
                      quote_char=None, truncate_ragged_lines=True,
                      missing_columns="insert", extra_columns="ignore")  # fmt: skip
    raw = raw.filter(~pl.all_horizontal(pl.col(*names).is_null()))  # blank lines hold nothing
    c = pl.col
    # cells are read as they are: a padded number fails its cast and quarantines the row
    # (trimming every text cell would cost most of the pass)
    typed = raw.with_columns(
        c("timestamp").str.strptime(pl.Datetime("us"), fmt.TIME_FORMAT, strict=False),
        c("from_bank", "to_bank").cast(pl.Int64, strict=False),
        c("amount_paid", "amount_received").cast(pl.Float64, strict=False),
        c("is_laundering").cast(pl.Int8, strict=False),
    )
    typed.with_columns(_reason()).drop("extra").sink_parquet(out, compression="lz4")


MAX_AMOUNT = 1e15  # in cents it still fits an Int64 exactly enough (a 1e308 overflowed)


def _reason() -> pl.Expr:
    """The first field of a row that cannot be read, with the fix, as one text."""
    c = pl.col
    checks = [
        (c("extra").is_not_null(), f"more than the {len(fmt.COLUMNS)} fields of the header"),
        (c("is_laundering").is_null(), f"fewer than the {len(fmt.COLUMNS)} fields of the header"),
        (c("timestamp").is_null(), "Timestamp: not YYYY/MM/DD HH:MM"),
        (c("from_bank").is_null() | c("to_bank").is_null(), "From Bank/To Bank: not an integer"),
        (c("from_account").fill_null("").str.len_bytes() == 0, "Account (originator): empty"),
        (c("to_account").fill_null("").str.len_bytes() == 0, "Account (beneficiary): empty"),
        (c("from_account").str.contains('"', literal=True)
         | c("to_account").str.contains('"', literal=True), "Account: holds a quote"),
        (c("amount_paid").fill_null(0) <= 0, "Amount Paid: must be a positive number"),
        (~c("amount_paid").is_finite() | (c("amount_paid") >= MAX_AMOUNT),
         f"Amount Paid: must be finite and below {MAX_AMOUNT:.0e}"),
        (c("amount_received").is_null() | ~c("amount_received").is_finite(),
         "Amount Received: not a finite number"),
        (c("payment_currency").fill_null("").str.len_bytes() == 0, "Payment Currency: empty"),
        (~c("payment_format").is_in(list(ALL_FORMATS)),
         f"Payment Format: not one of {list(ALL_FORMATS)}"),
        (~c("is_laundering").is_in([0, 1]), "Is Laundering: must be 0 or 1"),
    ]  # fmt: skip
    expr = pl.lit(None, dtype=pl.String)
    for test, why in reversed(checks):
        expr = pl.when(test.fill_null(True)).then(pl.lit(why)).otherwise(expr)
    return expr.alias("reason")


@contextmanager
def scratch(root: Path) -> Iterator[Path]:
    """A scratch folder under ``root`` that is removed afterwards, whatever happens."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ibm-aml-", dir=root) as tmp:
        yield Path(tmp)


def read_ibm_aml(folder: Path, *, options: IBMAmlOptions, scratch_root: Path) -> Alerts:
    """Every attempt of the set's patterns file as an alert case, with negative alerts at
    ``options.negative_ratio``; unreadable rows and refused attempts as quarantine rows."""
    files = find_files(folder)
    check_header(files.transactions, fmt.COLUMNS, "transactions")
    if files.accounts is not None:
        check_header(files.accounts, fmt.ACCOUNT_COLUMNS, "accounts")
    source = f"ibm_aml:{folder.name}"
    with files.patterns.open(encoding="utf-8", errors="replace") as fh:
        attempts, refused = fmt.parse_patterns(fh)
    out = Alerts(rejected=[_refusal(r, source, files.patterns.name) for r in refused])
    with scratch(scratch_root) as tmp:
        copy = tmp / "transactions.parquet"
        typed_copy(files.transactions, copy)
        _build(pl.scan_parquet(copy), attempts, files, options, source, out)
    return out


def _refusal(r: dict[str, Any], source: str, name: str) -> dict[str, Any]:
    return {"row": r["line"], "source": source, "reason": f"{name} line {r['line']}: {r['reason']}",
            "raw": None}  # fmt: skip


def _build(
    scan: pl.LazyFrame,
    attempts: list[fmt.Attempt],
    files: Files,
    options: IBMAmlOptions,
    source: str,
    out: Alerts,
) -> None:
    """The passes of the module docstring over the typed copy."""
    out.rows_in = int(scan.select(pl.len()).collect().item())
    bad = scan.filter(pl.col("reason").is_not_null()).select("row", "reason").collect()
    out.rejected += [{"row": r, "source": source, "raw": None,
                      "reason": f"{files.transactions.name} row {r}: {why}"}
                     for r, why in bad.iter_rows()]  # fmt: skip
    good = scan.filter(pl.col("reason").is_null()).drop("reason")
    members = {k[i] for a in attempts for k in a.keys for i in (2, 4)}
    alerts = _positives(attempts, _matching(good, attempts), options, source, out)
    flagged = (good.filter(pl.col("is_laundering") == 1)
               .select(pl.concat_list("from_account", "to_account").explode().unique())
               .collect(engine="streaming").to_series().to_list())  # fmt: skip
    alerts += _negatives(good, members | set(flagged), alerts, options)
    out.attempts = sum(a.attempt is not None for a in alerts)
    out.negatives = len(alerts) - out.attempts
    _fill(good, alerts, options)
    kinds = _entity_types(files.accounts, {a.subject for a in alerts})
    for a in alerts:
        case = fmt.alert_case(attempt=a.attempt, subject=a.subject, bad=a.bad, context=a.context,
                              entity_type=kinds.get(a.subject), case_key=a.key)  # fmt: skip
        out.cases.append((a.attempt.line if a.attempt else None, case))


@dataclass
class Alert:
    """One alert being cut: its attempt (None: negative), subject, window and rows."""

    attempt: fmt.Attempt | None
    subject: str
    start: dt.datetime
    end: dt.datetime
    key: str
    bad: list[dict[str, Any]] = field(default_factory=list)
    context: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accounts(self) -> set[str]:
        found = {a for r in self.bad for a in (r["from_account"], r["to_account"])}
        return found or {self.subject}


_KEY = ["timestamp", "from_bank", "from_account", "to_bank", "to_account", "cents"]


def _matching(good: pl.LazyFrame, attempts: list[fmt.Attempt]) -> pl.DataFrame:
    """The rows whose ``key`` is one of the attempts' lines: one streaming join."""
    keys = pl.DataFrame(
        [k[:5] + (round(k[5] * 100),) for a in attempts for k in a.keys],
        schema={"timestamp": pl.Datetime("us"), "from_bank": pl.Int64, "from_account": pl.String,
                "to_bank": pl.Int64, "to_account": pl.String, "cents": pl.Int64},
        orient="row",
    ).unique()  # fmt: skip
    cents = (pl.col("amount_paid") * 100).round().cast(pl.Int64).alias("cents")
    return (
        good.with_columns(cents)
        .join(keys.lazy(), on=_KEY, how="semi")
        .drop("cents")
        .collect(engine="streaming")
    )


def _positives(
    attempts: list[fmt.Attempt],
    matched: pl.DataFrame,
    options: IBMAmlOptions,
    source: str,
    out: Alerts,
) -> list[Alert]:
    """Each attempt with its lines matched one to one to transactions-file rows; an attempt
    with a line that matches no row, or with more rows than fit, is quarantined."""
    index: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in matched.sort("row").iter_rows(named=True):
        index[_row_key(r)].append(r)
    pad = dt.timedelta(hours=options.window_pad_hours)
    alerts = []
    for a in attempts:
        rows, missing = _match(a, index)
        why = None
        if missing:
            why = (f"{missing} of {len(a.keys)} transactions of the block have no matching row in "
                   "the transactions file (timestamp, banks, accounts, amount paid)")  # fmt: skip
        elif len(rows) > options.max_transactions:
            why = (f"the attempt has {len(rows)} transactions > max_transactions "
                   f"{options.max_transactions}; raise ibm_aml.max_transactions")  # fmt: skip
        if why:
            out.rejected.append({"row": a.line, "source": source, "raw": None,
                                 "reason": f"patterns line {a.line}: {why}"})  # fmt: skip
            continue
        times = [r["timestamp"] for r in rows]
        key = fmt.stable_id("attempt", *sorted(r["row"] for r in rows))
        alerts.append(Alert(a, fmt.subject_of(rows), min(times) - pad, max(times) + pad, key,
                            bad=rows))  # fmt: skip
    return alerts


def _row_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return fmt.key(r["timestamp"], r["from_bank"], r["from_account"], r["to_bank"],
                   r["to_account"], r["amount_paid"])  # fmt: skip


def _match(
    a: fmt.Attempt, index: dict[tuple[Any, ...], list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], int]:
    """The attempt's rows (each file row used once), and how many lines found none."""
    used: dict[tuple[Any, ...], int] = defaultdict(int)
    rows, missing = [], 0
    for k in a.keys:
        found = index.get(k, [])
        if used[k] < len(found):
            rows.append(found[used[k]])
            used[k] += 1
        else:
            missing += 1
    return rows, missing


def _negatives(
    good: pl.LazyFrame, dirty: set[str], positives: list[Alert], options: IBMAmlOptions
) -> list[Alert]:
    """``negative_ratio`` x the attempts' count of windows around accounts that never take
    part in laundering, drawn by a seeded hash of the row number; each window is as long as
    a positive one drawn with the same seed, so length tells nothing."""
    want = round(options.negative_ratio * max(len(positives), 1)) if positives else 0
    if want == 0:
        return []
    dirty_s = pl.Series(sorted(dirty), dtype=pl.String).implode()
    rank = (pl.col("row").cast(pl.UInt64) * _HASH + options.seed) % (2**32)
    picks = (
        good.filter(
            (pl.col("is_laundering") == 0)
            & (pl.col("from_account") != pl.col("to_account"))
            & ~pl.col("from_account").is_in(dirty_s)
            & ~pl.col("to_account").is_in(dirty_s)
        )
        .with_columns(rank.alias("rank"))
        .bottom_k(want * 4, by="rank")
        .sort("rank")
        .collect(engine="streaming")
    )
    rng = random.Random(options.seed)
    spans = [a.end - a.start for a in positives]
    alerts, seen = [], set()
    for r in picks.iter_rows(named=True):
        if r["from_account"] in seen:
            continue
        seen.add(r["from_account"])
        half = rng.choice(spans) / 2
        key = fmt.stable_id("negative", r["row"], options.seed)
        alerts.append(Alert(None, r["from_account"], r["timestamp"] - half,
                            r["timestamp"] + half, key))  # fmt: skip
        if len(alerts) == want:
            break
    return alerts


def _fill(good: pl.LazyFrame, alerts: list[Alert], options: IBMAmlOptions) -> None:
    """Each alert's context: the other rows of its accounts in its window, then those of
    their direct counterparties; laundering rows of other attempts are left out, so the
    alert holds one pattern. Sampled with the seed down to ``max_transactions``."""
    if not alerts:
        return
    near = _windowed(good, alerts, [a.accounts for a in alerts])
    parties = [{x for r in near[i].values() for x in _ends(r)} - a.accounts
               for i, a in enumerate(alerts)]  # fmt: skip
    far = _windowed(good, alerts, parties)
    for i, a in enumerate(alerts):
        own = {r["row"] for r in a.bad}
        rows = near[i] | far[i]
        pool = [rows[n] for n in sorted(rows) if n not in own and not rows[n]["is_laundering"]]
        room = options.max_transactions - len(a.bad)
        rng = random.Random(f"{options.seed}|{a.key}")
        a.context = pool if len(pool) <= room else rng.sample(pool, room)


def _ends(r: dict[str, Any]) -> tuple[str, str]:
    return r["from_account"], r["to_account"]


def _windowed(
    good: pl.LazyFrame, alerts: list[Alert], accounts: list[set[str]]
) -> list[dict[int, dict[str, Any]]]:
    """Per alert, row number -> row for the rows of its ``accounts`` inside its window: a
    streaming filter keeps the rows of any of these accounts (columnar, in polars), a join
    with the small table of (account, alert, window) keeps those inside their alert's
    window, and only these become Python rows."""
    wins = pl.DataFrame(
        [(acct, i, a.start, a.end) for i, a in enumerate(alerts) for acct in accounts[i]],
        schema={"account": pl.String, "alert": pl.Int64, "start": pl.Datetime("us"),
                "end": pl.Datetime("us")},
        orient="row",
    )  # fmt: skip
    everyone = pl.Series(sorted(set().union(*accounts)), dtype=pl.String).implode()
    span = (min(a.start for a in alerts), max(a.end for a in alerts))
    near = good.filter(
        (pl.col("from_account").is_in(everyone) | pl.col("to_account").is_in(everyone))
        & pl.col("timestamp").is_between(*span)
    ).collect(engine="streaming")  # the rows of these accounts: a streaming filter
    inside = pl.col("timestamp").is_between(pl.col("start"), pl.col("end"))
    frame = pl.concat(
        [
            near.join(wins, left_on=side, right_on="account").filter(inside).drop("start", "end")
            for side in ("from_account", "to_account")
        ]  # fmt: skip
    ).unique(["alert", "row"])
    out: list[dict[int, dict[str, Any]]] = [{} for _ in alerts]
    for r in frame.iter_rows(named=True):
        out[r.pop("alert")][r["row"]] = r
    return out


def _entity_types(accounts: Path | None, subjects: set[str]) -> dict[str, str]:
    """Subject account -> the kind of entity that holds it (the accounts file's Entity Name
    without its number, e.g. "Corporation #33520" -> "Corporation"); never the name."""
    if accounts is None or not subjects:
        return {}
    names = ["bank_name", "bank_id", "account", "entity_id", "entity_name"]
    frame = (
        pl.scan_csv(
            accounts,
            has_header=False,
            skip_rows=1,
            new_columns=names,
            schema=dict.fromkeys(names, pl.String),
        )  # fmt: skip
        .filter(pl.col("account").str.strip_chars().is_in(sorted(subjects)))
        .collect(engine="streaming")
    )
    out = {}
    for acct, name in frame.select("account", "entity_name").iter_rows():
        kind = (name or "").split("#")[0].strip().title()
        if kind in ENTITY_TYPES:
            out[acct.strip()] = kind
    return out

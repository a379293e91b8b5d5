"""Row schemas for the lake's ``cases`` and ``feedback`` datasets, and their validation.

Feedback is validated with polars expressions (no per-row Python), so millions of rows
stream through in constant memory: every row gets either a null ``reason`` (valid) or the
first rule it breaks. Cases are validated per row against the domain's pydantic schemas.
Splits come from a hash of the case id, so a case never changes split across versions.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl

from domains.base import Case, Domain
from domains.errors import reason_of
from tasks.lake import row_hash

FEEDBACK_KINDS = (
    "rating",
    "thumbs",
    "preference",
    "first_wrong_step",
    "step_labels",
    "corrected_answer",
    "rationale",
)
FEEDBACK_SCHEMA: dict[str, pl.DataType] = {
    "feedback_id": pl.String(),
    "case_id": pl.String(),
    "trace_id": pl.String(),
    "reviewer_id": pl.String(),
    "timestamp": pl.Datetime("us", "UTC"),
    "kind": pl.String(),
    "rating": pl.Int8(),
    "thumbs": pl.Boolean(),
    "chosen": pl.String(),
    "rejected": pl.String(),
    "first_wrong_step": pl.Int32(),
    "step_labels": pl.String(),
    "corrected_answer": pl.String(),
    "rationale": pl.String(),
    "source": pl.String(),
}
CASE_SCHEMA: dict[str, pl.DataType] = {
    "id": pl.String(),
    "domain": pl.String(),
    "family": pl.String(),
    "difficulty": pl.Int8(),
    "inputs": pl.String(),
    "truth": pl.String(),
    "reference": pl.String(),
    "split": pl.String(),
    "source": pl.String(),
}
_BAD_TEXT = "\ufffd"


def split_of(case_id: str, train: float, eval_: float) -> str:
    """train / eval / test from a stable hash of the case id."""
    bucket = int(hashlib.blake2b(case_id.encode(), digest_size=4).hexdigest(), 16) % 10_000
    if bucket < train * 10_000:
        return "train"
    return "eval" if bucket < (train + eval_) * 10_000 else "test"


def case_row(case: Case, source: str, train: float, eval_: float) -> dict[str, Any]:
    return {
        "id": case.id,
        "domain": case.domain,
        "family": case.family,
        "difficulty": case.difficulty,
        "inputs": json.dumps(case.inputs, sort_keys=True),
        "truth": None if case.truth is None else json.dumps(case.truth, sort_keys=True),
        "reference": case.reference,
        "split": split_of(case.id, train, eval_),
        "source": source,
    }


def cases_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    frame = pl.DataFrame([{k: r.get(k) for k in CASE_SCHEMA} for r in rows], schema=CASE_SCHEMA)
    return frame.with_columns(row_hash(["domain", "family", "inputs", "truth"]))


def _content(row: dict[str, Any]) -> tuple:
    return (row["domain"], row["family"], row["inputs"], row["truth"])


def _where(row: dict[str, Any]) -> str:
    n = row.get("row")
    return f"row {n} of {row['source']}" if n is not None else f"a row of {row['source']}"


def drop_duplicate_ids(
    rows: list[dict[str, Any]], committed: dict[str, tuple]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows whose id is free or names the same content, and rejections for rows that reuse
    an id with other content (search would score one case's answer against the other's
    tree). The first wins: ``committed`` (id -> content of the latest version), then the
    batch in order. A reason names both rows, never the id (it may be an MRN)."""
    first: dict[str, dict[str, Any]] = {}
    kept, bad = [], []
    for row in rows:
        earlier = first.get(row["id"])
        if row["id"] in committed and committed[row["id"]] != _content(row):
            seen = "a case of the latest committed version"
        elif earlier is not None and _content(earlier) != _content(row):
            seen = _where(earlier)
        else:
            first.setdefault(row["id"], row)
            kept.append(row)
            continue
        bad.append(
            {
                "row": row.get("row"),
                "source": row["source"],
                "reason": f"id: {_where(row)} reuses the id of {seen} with other content; give "
                "each case its own id",
                "raw": None,
            }
        )
    return kept, bad


def validate_cases(
    domain: Domain, raw: list[dict[str, Any]], source: str, train: float, eval_: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows from files/SQL -> (valid case rows, rejected rows with reasons)."""
    from domains.loading import row_to_case

    good, bad = [], []
    for n, row in enumerate(raw):
        try:
            case = row_to_case(domain, row)
        except Exception as err:  # noqa: BLE001 - every failure becomes a quarantine reason
            bad.append(
                {
                    "row": n,
                    "source": source,
                    "reason": reason_of(err),
                    "raw": json.dumps(row, default=str)[:2000],
                }
            )
            continue
        good.append(case_row(case, source, train, eval_) | {"row": n})
    return good, bad


def normalize_feedback(frame: pl.LazyFrame, source: str) -> pl.LazyFrame:
    """Cast whatever columns a file has onto FEEDBACK_SCHEMA (missing -> null), non-strictly,
    keeping the raw text of typed columns so a failed cast can be reported."""
    schema = frame.collect_schema()
    have = schema.names()
    exprs = []
    for name, dtype in FEEDBACK_SCHEMA.items():
        if name == "source":
            exprs.append(pl.lit(source).alias("source"))
        elif name not in have:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
        elif name == "timestamp":
            exprs.append(_timestamp(name, schema[name]))
        elif name == "thumbs" and schema[name] == pl.String:
            word = pl.col(name).str.strip_chars().str.to_lowercase()
            exprs.append(
                pl.when(word.is_in(["true", "1", "yes", "up"]))
                .then(True)
                .when(word.is_in(["false", "0", "no", "down"]))
                .then(False)
                .otherwise(None)
                .alias(name)
            )
        else:
            exprs.append(pl.col(name).cast(dtype, strict=False).alias(name))
    raw = [
        (pl.col(c).cast(pl.String) if c in have else pl.lit(None, pl.String)).alias(f"_raw_{c}")
        for c in ("rating", "thumbs", "first_wrong_step")
    ]
    text = [pl.col(c).cast(pl.String) for c in have]
    garbled = (
        pl.any_horizontal([t.str.contains(_BAD_TEXT, literal=True).fill_null(False) for t in text])
        if text
        else pl.lit(False)
    )
    return frame.select(*exprs, *raw, garbled.alias("_garbled"))


_TZ_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%dT%H:%M:%S%:z", "%Y-%m-%d %H:%M:%S%:z")
_NAIVE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
)


def _timestamp(name: str, dtype: pl.DataType) -> pl.Expr:
    """ISO-8601 text (with offset, Z, or naive = UTC) or a datetime column -> UTC datetime."""
    utc = pl.Datetime("us", "UTC")
    if dtype == pl.String:
        text = pl.col(name).str.strip_chars().str.replace(r"Z$", "+00:00")
        aware = [
            text.str.to_datetime(f, strict=False, time_unit="us").dt.convert_time_zone("UTC")
            for f in _TZ_FORMATS
        ]
        naive = [
            text.str.to_datetime(f, strict=False, time_unit="us").dt.replace_time_zone("UTC")
            for f in _NAIVE_FORMATS
        ]
        return pl.coalesce(*aware, *naive).cast(utc).alias(name)
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return pl.col(name).dt.replace_time_zone("UTC").cast(utc).alias(name)
    return pl.col(name).cast(utc, strict=False).alias(name)


def feedback_reason() -> pl.Expr:
    """The first rule a feedback row breaks, or null when it is valid."""
    c = pl.col
    blank = lambda name: c(name).is_null() | (c(name).cast(pl.String).str.strip_chars() == "")  # noqa: E731
    typed = lambda name: c(f"_raw_{name}").is_not_null() & c(name).is_null()  # noqa: E731
    kind = c("kind")
    rules = [
        (c("_garbled"), "text is not valid UTF-8 (mixed encodings); re-save the file as UTF-8"),
        (blank("case_id"), "case_id is missing"),
        (blank("trace_id"), "trace_id (trace or completion id) is missing"),
        (blank("reviewer_id"), "reviewer_id is missing"),
        (c("timestamp").is_null(), "timestamp is missing or not ISO-8601"),
        (~kind.is_in(FEEDBACK_KINDS) | kind.is_null(), f"kind must be one of {FEEDBACK_KINDS}"),
        (typed("rating"), "rating is not an integer"),
        (typed("thumbs"), "thumbs is not true/false"),
        (typed("first_wrong_step"), "first_wrong_step is not an integer"),
        ((kind == "rating") & ~c("rating").is_between(1, 5).fill_null(False), "rating must be 1-5"),
        ((kind == "thumbs") & c("thumbs").is_null(), "thumbs must be true or false"),
        (
            (kind == "preference") & (blank("chosen") | blank("rejected")),
            "preference needs chosen and rejected",
        ),
        (
            (kind == "preference") & (c("chosen") == c("rejected")).fill_null(False),
            "chosen and rejected are the same completion",
        ),
        (
            (kind == "first_wrong_step") & ~(c("first_wrong_step") >= 0).fill_null(False),
            "first_wrong_step must be >= 0 (0 = no wrong step)",
        ),
        (
            (kind == "step_labels") & ~c("step_labels").str.contains(r"^[01]+$").fill_null(False),
            "step_labels must be a string of 0/1 per step, e.g. 1101",
        ),
        ((kind == "corrected_answer") & blank("corrected_answer"), "corrected_answer is empty"),
        ((kind == "rationale") & blank("rationale"), "rationale is empty"),
    ]
    expr = pl.lit(None, pl.String)
    for cond, reason in reversed(rules):
        expr = pl.when(cond.fill_null(True)).then(pl.lit(reason)).otherwise(expr)
    return expr.alias("reason")


def check_feedback(frame: pl.LazyFrame, known_traces: set[str] | None = None) -> pl.LazyFrame:
    """Every row with ``reason`` (null when valid), ``content_hash`` and ``feedback_id``."""
    checked = frame.with_columns(feedback_reason())
    if known_traces is not None:
        tree_ref = pl.col("trace_id").str.contains("#", literal=True)  # <case_id>#<node_id>
        unknown = ~pl.col("trace_id").is_in(list(known_traces)) & ~tree_ref
        checked = checked.with_columns(
            pl.when(pl.col("reason").is_null() & unknown)
            .then(pl.lit("trace_id points at an unknown trace"))
            .otherwise(pl.col("reason"))
            .alias("reason")
        )
    judged = [c for c in FEEDBACK_SCHEMA if c not in ("feedback_id", "source")]
    return checked.with_columns(row_hash(judged)).with_columns(
        pl.coalesce(pl.col("feedback_id"), pl.col("content_hash")).alias("feedback_id")
    )


def split_feedback(checked: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(valid rows in FEEDBACK_SCHEMA + content_hash, rejected rows with reason and raw)."""
    helper = [c for c in checked.collect_schema().names() if c.startswith("_")]
    valid = checked.filter(pl.col("reason").is_null()).drop("reason", *helper)
    rejected = checked.filter(pl.col("reason").is_not_null()).select(
        "reason",
        "source",
        pl.struct(pl.exclude("reason", "source", "content_hash", *helper))
        .struct.json_encode()
        .alias("raw"),
    )
    return valid, rejected

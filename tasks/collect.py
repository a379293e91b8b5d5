"""Prefect tasks behind the ``collect`` flow: one per source, plus validate/write/record.

Sources return raw material; ``commit_*`` tasks validate, deduplicate, split, and write a
new lake version only when the content changed. Inbox files are moved to ``processed/``
only after the version that took them in is committed, so a crash in between re-reads
them next time, and deduplication keeps the result identical.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from domains.base import Case
from domains.errors import PonderError, reason_of
from domains.loading import read_rows, row_to_case
from tasks.context import StageContext
from tasks.ibm_aml import IBMAmlOptions
from tasks.lake import Lake, VersionInfo
from tasks.records import (
    FEEDBACK_SCHEMA,
    case_row,
    cases_frame,
    check_feedback,
    drop_duplicate_ids,
    normalize_feedback,
    split_feedback,
    validate_cases,
)
from tasks.span_labels import is_right, is_span_label, span_label_rows, stamp_ms

INBOX_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")


@dataclass
class Batch:
    """What the sources gathered for one dataset."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    frames: list[pl.LazyFrame] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    rows_in: int = 0


@task(cache_policy=NO_CACHE)  # the context is not a cache key
def from_generator(
    ctx: StageContext,
    *,
    per_cell: int,
    seed: int,
    train: float,
    eval_: float,
    families: Sequence[str] | None = None,
    difficulties: Sequence[int] = (1, 2, 3, 4, 5),
    where: dict[str, list[str]] | None = None,
) -> Batch:
    """``per_cell`` synthetic cases per family x difficulty; with ``where``, only cases whose
    inputs match (``Domain.generate``)."""
    d = ctx.domain
    label = f"generator:seed={seed},n={per_cell}" + (f",where={where}" if where else "")
    batch = Batch(sources=[label])
    names = sorted(families or d.families)
    for name in names:
        d.family(name)  # an unknown family fails here, listing the valid ones
    if where:
        d.check_where(where, names)
    for family in names:
        if where and not set(where) <= set(d.family(family).Inputs.model_fields):
            continue  # a family without the filtered field has no matching case
        for level in difficulties:
            for case in d.generate(per_cell, seed, family, level, where=where):
                batch.rows.append(case_row(case, "generator", train, eval_))
    batch.rows_in = len(batch.rows)
    return batch


@task(cache_policy=NO_CACHE)
def from_medcalc_bench(ctx: StageContext, *, path: Path, train: float, eval_: float) -> Batch:
    """A MedCalc-Bench CSV as it ships (``read_medcalc``) as a batch of case rows. Label
    disagreements are counted per calculator in the source label and the log."""
    cases, rejected, disagree = read_medcalc(ctx, path)
    batch = Batch(rejected=rejected, rows_in=len(cases) + len(rejected))
    batch.rows = [case_row(case, f"medcalc_bench:{path.name}", train, eval_) | {"row": n}
                  for n, case in cases]  # fmt: skip
    counts = ", ".join(f"{k} {v}" for k, v in sorted(disagree.items())) or "none"
    batch.sources.append(f"medcalc_bench:{path.name} (label_disagreement: {counts})")
    get_run_logger().info("MedCalc-Bench %s: label_disagreement per calculator: %s",
                          path.name, counts)  # fmt: skip
    return batch


@task(cache_policy=NO_CACHE)
def from_ibm_aml(
    ctx: StageContext, *, path: Path, options: IBMAmlOptions, train: float, eval_: float
) -> Batch:
    """An IBM AML set as it ships (a folder: ``tasks.ibm_aml``) as a batch of alert cases:
    one per laundering attempt, plus negative alerts."""
    from tasks.ibm_aml import read_ibm_aml

    if ctx.name != "finance_risk":
        raise PonderError("sources", f"ibm_aml holds finance_risk cases, not {ctx.name}",
                          "read it with --domain finance_risk")  # fmt: skip
    alerts = read_ibm_aml(path, options=options, scratch_root=ctx.lake.scratch)
    source = f"ibm_aml:{path.name}"
    batch = Batch(rejected=alerts.rejected, rows_in=alerts.rows_in)
    for n, dump in alerts.cases:
        try:
            case = row_to_case(ctx.domain, dump)
        except Exception as err:  # noqa: BLE001 - every failure becomes a quarantine reason
            batch.rejected.append({"row": n, "source": source, "reason": reason_of(err),
                                   "raw": None})  # fmt: skip
            continue
        batch.rows.append(case_row(case, source, train, eval_) | {"row": n})
    batch.sources.append(f"{source} ({alerts.rows_in:,} transactions: {alerts.attempts} "
                         f"attempts, {alerts.negatives} negative alerts)")  # fmt: skip
    return batch


def read_medcalc(
    ctx: StageContext, path: Path
) -> tuple[list[tuple[int, Case]], list[dict[str, Any]], Counter]:
    """(row number, case) for the rows of the calculators ponder implements, the quarantine
    rows of the others with their reasons (``domains.medicine.medcalc_bench``), and the
    label disagreements per calculator. Used by collect and by ``infer --input
    medcalc_bench:FILE``."""
    from domains.medicine import medcalc_bench as mb

    if ctx.name != "medicine":
        raise PonderError("sources", f"medcalc_bench holds medicine cases, not {ctx.name}",
                          "read it with --domain medicine")  # fmt: skip
    frame = _dataset_csv(path, mb.COLUMNS, "MedCalc-Bench")
    source = f"medcalc_bench:{path.name}"
    cases, rejected, disagree = [], [], Counter()
    for n, row in enumerate(frame.iter_rows(named=True)):
        try:
            case = row_to_case(ctx.domain, mb.row_case(row))
        except Exception as err:  # noqa: BLE001 - every failure becomes a quarantine reason
            where = {"Row Number": row.get("Row Number"), "Calculator": row.get("Calculator Name")}
            rejected.append({"row": n, "source": source, "reason": reason_of(err),
                             "raw": json.dumps(where)})  # fmt: skip
            continue
        if "label_disagreement" in case.inputs["origin"]["tags"]:
            disagree[case.inputs["calculator"]] += 1
        cases.append((n, case))
    return cases, rejected, disagree


@task(cache_policy=NO_CACHE)
def over_context(ctx: StageContext, *, batch: Batch, limit: int, model: str | None) -> int:
    """Move the batch's cases whose prompt (chat template included) is over ``limit``
    tokens of ``model``'s tokenizer to its quarantine, with the count: a note is never cut.
    Returns how many moved."""
    from transformers import AutoTokenizer

    from models.chat import safe_messages
    from tasks.infer import resolve_model, row_case

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(ctx, model=model)[2])
    keep = []
    for row in batch.rows:
        messages = safe_messages(tokenizer, ctx.domain.prompt(row_case(row)))
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=False)  # fmt: skip
        if len(ids) <= limit:
            keep.append(row)
            continue
        batch.rejected.append({
            "row": row.get("row"), "source": row["source"], "raw": None,
            "reason": f"prompt is {len(ids)} tokens > max_prompt_tokens {limit}: not cut; use a "
            "model with a longer context and raise max_prompt_tokens",
        })  # fmt: skip
    moved, batch.rows = len(batch.rows) - len(keep), keep
    return moved


def _dataset_csv(path: Path, columns: Sequence[str], name: str) -> pl.DataFrame:
    """A public dataset's CSV, every column as text; wrong or missing columns are a
    file-level error that names the columns expected and found."""
    if not path.is_file():
        raise PonderError("path", f"{path} is not a file", f"give the {name} CSV file")
    found = pl.scan_csv(path, infer_schema=False).collect_schema().names()
    missing = [c for c in columns if c not in found]
    if missing:
        raise PonderError(
            "path",
            f"{path.name} is not a {name} file: missing columns {missing}; found {found}",
            f"give the dataset's CSV as it ships, with the columns {list(columns)}",
        )
    return pl.read_csv(path, infer_schema=False, columns=list(columns))


def inbox_files(inbox: Path, dataset: str) -> list[Path]:
    """Entries of ``<inbox>/<dataset>/`` with a readable suffix, links and devices included:
    ``refused`` tells which of them are not read."""
    folder = inbox / dataset
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.suffix in INBOX_SUFFIXES and not p.name.startswith(".")
    )


def refused(path: Path) -> str | None:
    """Why an inbox entry is not read, or None: a symbolic link could point anywhere (a link
    to ``/proc/self/environ`` reports size 0 and would pass the size limit), and only a
    regular file is data."""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return "symbolic link refused: copy the file itself into the inbox"
    if not stat.S_ISREG(mode):
        return "not a regular file: only plain CSV/JSONL/Parquet files are read"
    return None


def free_path(target: Path) -> Path:
    """``target``, or when something is already there the same name with a UTC timestamp
    and a random tag before the suffix: nothing in the inbox is ever overwritten."""
    if not target.exists() and not target.is_symlink():
        return target
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return target.with_name(f"{target.stem}-{stamp}-{uuid.uuid4().hex[:8]}{target.suffix}")


@task(cache_policy=NO_CACHE)
def cases_from_files(
    ctx: StageContext, *, inbox: Path, train: float, eval_: float, max_file_mb: float
) -> Batch:
    """Case files dropped in ``<inbox>/cases/``."""
    batch = Batch()
    for path, (raw, unreadable) in _readable(inbox, "cases", max_file_mb, batch, read_rows):
        good, bad = validate_cases(ctx.domain, raw, f"file:{path.name}", train, eval_)
        batch.rows += good
        batch.rejected += [{**r, "source": f"file:{path.name}"} for r in unreadable + bad]
        batch.rows_in += len(raw) + len(unreadable)
    return batch


@task
def feedback_from_files(inbox: Path, max_file_mb: float) -> Batch:
    """Feedback files dropped in ``<inbox>/feedback/``, scanned lazily (streaming)."""
    batch = Batch()
    for path, (frame, bad_lines) in _readable(inbox, "feedback", max_file_mb, batch, _scanned):
        batch.rejected += [{**r, "source": f"file:{path.name}"} for r in bad_lines]
        batch.frames.append(normalize_feedback(frame, f"file:{path.name}"))
    return batch


def _readable(
    inbox: Path, dataset: str, max_file_mb: float, batch: Batch, read: Callable[[Path], Any]
) -> Iterator[tuple[Path, Any]]:
    """Each inbox file of ``dataset`` with what ``read`` made of it. Every file is recorded
    in the batch (so it moves to processed/); a refused, oversized or unreadable one is
    quarantined whole, with its reason, and not yielded."""
    for path in inbox_files(inbox, dataset):
        batch.files.append(path)
        batch.sources.append(f"file:{path.name}")
        if _refused(path, batch) or _too_big(path, max_file_mb, batch):
            continue
        try:
            content = read(path)
        except Exception as err:  # noqa: BLE001 - an unreadable file is quarantined whole
            batch.rejected.append(_whole_file(path, f"unreadable file: {str(err)[:200]}"))
            continue
        yield path, content


def _scanned(path: Path) -> tuple[pl.LazyFrame, list[dict[str, Any]]]:
    """``scan_feedback_file`` with the schema resolved now, so a bad file fails here (and is
    quarantined whole), not when the frame is collected at commit."""
    frame, bad = scan_feedback_file(path)
    frame.collect_schema()
    return frame, bad


def scan_feedback_file(path: Path) -> tuple[pl.LazyFrame, list[dict[str, Any]]]:
    """A lazy scan, plus JSONL lines that could not be read (each with its reason). CSV
    text is read as strings with invalid UTF-8 replaced (then flagged); JSONL lines are
    parsed one by one like case files, so a bad line is quarantined instead of failing the
    whole run later, when the lazy frame is collected."""
    if path.suffix == ".parquet":
        return pl.scan_parquet(path), []
    if path.suffix == ".csv":
        frame = pl.scan_csv(path, infer_schema=False, encoding="utf8-lossy")
        # a full streaming parse now (flat memory), so a ragged row rejects the file here
        # with its reason, not later when the frame is collected
        frame.select(pl.all().null_count()).collect(engine="streaming")
        return frame, []
    good, bad = read_rows(path)
    rows = [{k: _as_text(v) for k, v in r.items() if k != "_row"} for r in good]
    return pl.DataFrame(rows, infer_schema_length=None).lazy(), bad


def _as_text(value: Any) -> str | None:
    """JSON values as the strings a CSV would hold (the checks then type them)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, dict | list | bool) else str(value)


@dataclass(frozen=True)
class SqlSource:
    """A database URI and its password, kept apart so the password is never part of a
    parameter, a log line or a task's cache key (its repr hides it)."""

    uri: str
    password: str | None = field(default=None, repr=False)

    def url(self) -> Any:
        from sqlalchemy.engine import make_url

        url = make_url(self.uri)
        return url.set(password=self.password) if self.password else url


@task(cache_policy=NO_CACHE)  # the password must not reach a cache key
def from_sql(dataset: str, source: SqlSource, query: str) -> pl.DataFrame:
    """Rows from a database (SQLite path or any SQLAlchemy URI), through polars."""
    if source.uri.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(source.uri.removeprefix("sqlite:///")) as conn:
            return pl.read_database(query, connection=conn, infer_schema_length=None)
    from sqlalchemy import create_engine

    engine = create_engine(source.url())
    try:
        with engine.connect() as conn:
            return pl.read_database(query, connection=conn, infer_schema_length=None)
    finally:
        engine.dispose()


def experiment_traces(experiment: str) -> list[Any]:
    """Every trace (metadata and assessments, no spans) in an experiment; [] if none."""
    import mlflow

    from models.registry import connect

    connect()
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return mlflow.search_traces(
        locations=[exp.experiment_id], return_type="list", include_spans=False
    )


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def feedback_from_mlflow(
    ctx: StageContext, *, experiment: str, watermark_ms: int, refs: dict[str, str] | None = None
) -> tuple[pl.DataFrame, list[dict[str, Any]], int, set[str]]:
    """Human feedback assessments on traces created or updated after the watermark (a
    trace's step-span labels become one row per reviewer, ``tasks.span_labels``), the
    labels that could not be used (quarantine rows), the new watermark, and the ids of all
    traces seen (for the unknown-trace check). ``refs`` maps a trace's case reference back
    to the case id (``case_refs``)."""
    traces = experiment_traces(experiment)
    rows, bad, newest, domain = [], [], watermark_ms, ctx.name
    for trace in traces:
        if (trace.info.tags or {}).get("ponder.domain", domain) != domain:
            continue  # feedback on another domain's trace
        spans = []
        for a in trace.info.assessments or []:
            stamp = stamp_ms(a)
            if is_span_label(a):
                spans.append(a)
            elif stamp > watermark_ms and getattr(a, "feedback", None) is not None:
                rows.append(assessment_row(trace, a, stamp, refs or {}))
            newest = max(newest, stamp) if getattr(a, "feedback", None) is not None else newest
        if any(stamp_ms(a) > watermark_ms for a in spans):  # all of them: labels add up
            found, rejected = span_label_rows(
                _with_spans(trace), spans, case_id=_trace_case(trace, refs or {})
            )
            rows, bad = rows + found, bad + rejected
    frame = (
        pl.DataFrame(rows, schema_overrides={"timestamp": pl.String})
        if rows
        else pl.DataFrame(schema=FEEDBACK_SCHEMA)
    )
    return frame, bad, newest, {t.info.trace_id for t in traces}


def _with_spans(trace: Any) -> Any:
    """The trace with its spans (the listing leaves them out)."""
    import mlflow

    return mlflow.get_trace(trace.info.trace_id)


def case_refs(ctx: StageContext) -> dict[str, str]:
    """Case reference (as traces and reports show it) -> case id, for the domain's cases."""
    latest = ctx.lake.latest(ctx.name, "cases")
    if latest is None:
        return {}
    ids = ctx.lake.scan(ctx.name, "cases", latest.version).select("id").collect()["id"]
    return {ctx.redactor.case_ref(i): i for i in ids}


def _trace_case(trace: Any, refs: dict[str, str]) -> str | None:
    """The case a trace is about: its reference mapped back to the id (an unknown reference
    stays as it is and fails the case check later); traces logged before references carry
    the raw id."""
    tags = trace.info.tags or {}
    ref = tags.get("ponder.case_ref")
    return refs.get(ref, ref) if ref is not None else tags.get("ponder.case_id")


def assessment_row(
    trace: Any, a: Any, stamp_ms: int, refs: dict[str, str] | None = None
) -> dict[str, Any]:
    """One MLflow feedback assessment as a feedback record (name picks the kind)."""
    value = a.value
    kind = (
        a.name
        if a.name
        in ("rating", "thumbs", "first_wrong_step", "step_labels", "corrected_answer", "preference")
        else "rationale"
    )
    if a.name == "verdict":  # the reviewer's overall call on the trace: correct / wrong
        right = is_right(value)
        kind, value = "thumbs", value if right is None else right  # neither: quarantined
    row: dict[str, Any] = {
        "feedback_id": a.assessment_id,
        "trace_id": trace.info.trace_id,
        "case_id": _trace_case(trace, refs or {}),
        "reviewer_id": a.source.source_id if a.source else None,
        "timestamp": dt.datetime.fromtimestamp(stamp_ms / 1000, dt.UTC).isoformat(),
        "kind": kind,
        "rationale": a.rationale or (str(value) if kind == "rationale" else None),
    }
    if kind == "preference" and isinstance(value, dict):
        row |= {"chosen": value.get("chosen"), "rejected": value.get("rejected")}
    elif kind == "corrected_answer":
        row["corrected_answer"] = json.dumps(value) if not isinstance(value, str) else value
    elif kind == "step_labels" and isinstance(value, list):
        row[kind] = "".join("1" if v else "0" for v in value)
    elif kind in ("rating", "thumbs", "first_wrong_step", "step_labels"):
        row[kind] = str(value).lower() if isinstance(value, bool) else str(value)
    return row


@task(cache_policy=NO_CACHE)
def commit_cases(ctx: StageContext, *, batch: Batch) -> dict[str, Any]:
    """Dedup against the latest version and write a new one when anything is new; a row
    that reuses an id with other content is quarantined."""
    lake, domain = ctx.lake, ctx.name
    latest = lake.latest(domain, "cases")
    rows, reused = drop_duplicate_ids(batch.rows, _committed(lake, latest, batch.rows))
    batch.rejected += reused
    fresh = cases_frame(rows).unique("content_hash", keep="first", maintain_order=True)
    duplicates = len(rows) - fresh.height
    merged = fresh.lazy()
    if latest is not None:
        old = lake.scan(domain, "cases", latest.version)
        seen = old.select("content_hash").collect()["content_hash"]
        duplicates += fresh.filter(pl.col("content_hash").is_in(seen.implode())).height
        new_only = fresh.lazy().filter(~pl.col("content_hash").is_in(seen.implode()))
        merged = pl.concat([old, new_only])
    splits = merged.group_by("split").len().collect()
    info = lake.write_version(
        domain,
        "cases",
        merged,
        batch.sources,
        extra={"splits": dict(zip(splits["split"], splits["len"], strict=True))},
    )
    quarantined = lake.quarantine(domain, "cases", _reject_frame(batch.rejected), ctx.run_id)
    return _summary(
        "cases",
        batch,
        info,
        latest,
        valid=fresh.height,
        duplicates=duplicates,
        quarantined=quarantined,
        per_family=_per_family(fresh),
    )


def _committed(
    lake: Lake, latest: VersionInfo | None, rows: list[dict[str, Any]]
) -> dict[str, tuple]:
    """id -> content of the latest version's cases whose id the batch uses."""
    if latest is None or not rows:
        return {}
    ids = pl.Series([r["id"] for r in rows], dtype=pl.String).unique()
    old = (
        lake.scan(latest.domain, "cases", latest.version)
        .filter(pl.col("id").is_in(ids.implode()))
        .select("id", "domain", "family", "inputs", "truth")
        .collect()
    )
    return {r[0]: tuple(r[1:]) for r in old.iter_rows()}


@task(cache_policy=NO_CACHE)
def commit_feedback(
    ctx: StageContext, *, batch: Batch, known_traces: set[str] | None
) -> dict[str, Any]:
    """Validate (vectorized, one streaming pass staged to Parquet), dedup, and write a new
    feedback version when anything is new."""
    lake, domain, run_id = ctx.lake, ctx.name, ctx.run_id
    if not batch.frames:
        batch.frames.append(normalize_feedback(pl.DataFrame(schema=FEEDBACK_SCHEMA).lazy(), "-"))
    staged = lake.stage(domain, "feedback", run_id)
    try:
        check_feedback(pl.concat(batch.frames, how="vertical_relaxed"), known_traces).sink_parquet(
            staged
        )
        valid, rejected = split_feedback(pl.scan_parquet(staged))
        latest = lake.latest(domain, "feedback")
        # is_first_distinct streams (peak RSS ~0.7 GB at 2M rows); unique() holds ~2.5 GB
        fresh = valid.filter(pl.col("content_hash").is_first_distinct())
        if latest is not None:
            seen = lake.scan(domain, "feedback", latest.version).select("content_hash")
            fresh = fresh.join(seen, on="content_hash", how="anti")
            fresh = pl.concat(
                [lake.scan(domain, "feedback", latest.version), fresh], how="vertical_relaxed"
            )
        info = lake.write_version(domain, "feedback", fresh, batch.sources)
        bad = pl.concat(
            [rejected.collect(), _reject_frame(batch.rejected).select("reason", "source", "raw")],
            how="vertical_relaxed",
        )
        quarantined = lake.quarantine(domain, "feedback", bad, run_id)
        valid_n = valid.select(pl.len()).collect().item()
    finally:
        staged.unlink(missing_ok=True)
    batch.rows_in += valid_n + bad.height - len(batch.rejected)
    before = latest.rows if latest else 0
    after = info.rows if info else before
    return _summary(
        "feedback",
        batch,
        info,
        latest,
        valid=valid_n,
        duplicates=valid_n - (after - before),
        quarantined=quarantined,
        per_family={},
        rejected_n=bad.height,
    )


@task
def mark_processed(files: list[Path], inbox: Path, version: str | None) -> int:
    """Move ingested files to ``<inbox>/processed/<version>/`` so none is read twice; a
    name already there gets a timestamp, never an overwrite. A link moves as a link."""
    for path in files:
        target = inbox / "processed" / (version or "unchanged") / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), free_path(target))
    return len(files)


def _refused(path: Path, batch: Batch) -> bool:
    reason = refused(path)
    if reason:
        batch.rejected.append(_whole_file(path, reason))
        get_run_logger().warning("skipped %s: %s", path.name, reason)
    return reason is not None


def _too_big(path: Path, max_file_mb: float, batch: Batch) -> bool:
    size_mb = path.stat().st_size / 2**20
    if size_mb <= max_file_mb:
        return False
    batch.rejected.append(
        _whole_file(
            path,
            f"file is {size_mb:,.2f} MB, over max_file_mb={max_file_mb:g}; split it or "
            "raise the limit",
        )
    )
    get_run_logger().warning("skipped %s: %.2f MB over the limit", path.name, size_mb)
    return True


def _whole_file(path: Path, reason: str) -> dict[str, Any]:
    return {"row": None, "source": f"file:{path.name}", "reason": reason, "raw": str(path)}


def _reject_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema = {"row": pl.Int64, "source": pl.String, "reason": pl.String, "raw": pl.String}
    return pl.DataFrame(rows, schema=schema)


def _per_family(frame: pl.DataFrame) -> dict[str, int]:
    if frame.height == 0:
        return {}
    counts = frame.group_by("family").len()
    return dict(zip(counts["family"], counts["len"], strict=True))


def _summary(
    dataset: str,
    batch: Batch,
    info: VersionInfo | None,
    latest: VersionInfo | None,
    *,
    valid: int,
    duplicates: int,
    quarantined: Path | None,
    per_family: dict[str, int],
    rejected_n: int | None = None,
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "rows_in": batch.rows_in,
        "valid": valid,
        "quarantined": len(batch.rejected) if rejected_n is None else rejected_n,
        "duplicates": duplicates,
        "per_family": per_family,
        "version": info.version if info else (latest.version if latest else None),
        "new_version": info is not None,
        "rows_total": (info or latest).rows if (info or latest) else 0,
        "quarantine_file": str(quarantined) if quarantined else None,
        "path": str(info.path) if info else None,
        "sources": list(batch.sources),
    }


@task(cache_policy=NO_CACHE)  # not retried: a retry could log a second run (connect() retries)
def record_in_mlflow(
    ctx: StageContext, *, summaries: list[dict[str, Any]], params: dict[str, Any]
) -> str:
    """A ``collect`` MLflow run with each dataset version as a dataset input."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from models.registry import connect, ensure_experiment
    from models.runs import tracked_run

    connect()
    exp_id, domain = ensure_experiment(), ctx.name
    with tracked_run(f"collect-{domain}", experiment_id=exp_id) as run:
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
        for s in summaries:
            if s["path"] is None and s["version"] is None:
                continue
            mlflow.log_metrics(
                {
                    f"{s['dataset']}_{k}": float(s[k])
                    for k in ("rows_in", "valid", "quarantined", "duplicates", "rows_total")
                }
            )
            if s["path"]:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    source = resolve_dataset_source(s["path"])
                ds = MetaDataset(
                    source=source,
                    name=f"{domain}/{s['dataset']}@{s['version']}",
                    digest=s["version"],
                )
                mlflow.log_input(ds, context=s["dataset"])
        mlflow.set_tags({"ponder.stage": "collect", "ponder.domain": domain})
    return run.info.run_id


@task(cache_policy=NO_CACHE)
def publish_artifacts(ctx: StageContext, *, summaries: list[dict[str, Any]]) -> None:
    """A table of counts and a markdown summary of quarantine reasons (Prefect artifacts)."""
    from tasks.artifacts import markdown_artifact, table_artifact

    domain = ctx.name

    table = [
        {
            "dataset": s["dataset"],
            "version": s["version"],
            "new_version": s["new_version"],
            "rows_in": s["rows_in"],
            "valid": s["valid"],
            "quarantined": s["quarantined"],
            "duplicates": s["duplicates"],
            "per_family": ", ".join(f"{k}={v}" for k, v in s["per_family"].items()),
        }
        for s in summaries
    ]
    table_artifact(
        domain=domain,
        table=table,
        key=f"collect-{domain.replace('_', '-')}",
        description=f"collect {domain}: rows per dataset",
    )
    lines = [f"# Quarantine reasons ({domain})", ""]
    for s in summaries:
        if not s["quarantine_file"]:
            lines.append(f"- **{s['dataset']}**: nothing quarantined")
            continue
        counts = (
            pl.read_parquet(s["quarantine_file"])
            .group_by("reason")
            .len()
            .sort("len", descending=True)
        )
        lines.append(f"- **{s['dataset']}** ({s['quarantine_file']}):")
        lines += [f"  - {n} x {reason}" for reason, n in counts.iter_rows()]
    markdown_artifact(
        domain=domain, markdown="\n".join(lines), key=f"quarantine-{domain.replace('_', '-')}"
    )

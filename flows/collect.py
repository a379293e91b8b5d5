"""Flow ``collect``: gather cases and feedback into a new, versioned lake snapshot.

Sources: the domain's generator, an inbox of files, a SQL query, and human feedback on
MLflow traces (from the last watermark). Rows are validated (invalid ones quarantined with
a reason), deduplicated by content hash, split by a hash of the case id, and written as a
new version only when something changed: re-running with the same inputs is a no-op.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from domains.base import DomainName
from domains.faults import failpoint
from tasks.collect import (
    Batch,
    SqlSource,
    case_refs,
    cases_from_files,
    commit_cases,
    commit_feedback,
    experiment_traces,
    feedback_from_files,
    feedback_from_mlflow,
    from_generator,
    from_ibm_aml,
    from_medcalc_bench,
    from_sql,
    mark_processed,
    over_context,
    publish_artifacts,
    record_in_mlflow,
)
from tasks.context import StageContext
from tasks.events import FEEDBACK_READY, announce
from tasks.ibm_aml import IBMAmlOptions
from tasks.records import normalize_feedback, validate_cases

Source = Literal["generator", "files", "sql", "mlflow_feedback", "medcalc_bench", "ibm_aml"]
DATASET_SOURCES = ("medcalc_bench", "ibm_aml")  # the public datasets, read from path


class CollectParams(BaseModel):
    """Parameters of one collect run (rendered as a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    domain: DomainName = Field(default="finance_risk", description="Registered domain name.")
    sources: list[Source] = Field(
        default=["generator", "files", "mlflow_feedback"], description="Which sources to read."
    )
    per_cell: int = Field(
        default=4, ge=0, le=100_000, description="Generator: cases per family x difficulty."
    )
    seed: int = Field(ge=0, le=2**32 - 1, default=0, description="Generator seed.")
    families: list[str] | None = Field(
        default=None, description="Generator: families drawn (None: every family of the domain)."
    )
    difficulties: list[Annotated[int, Field(ge=1, le=5)]] = Field(
        default=[1, 2, 3, 4, 5],
        min_length=1,
        description="Generator: difficulty levels drawn (1..5), per_cell cases each.",
    )
    where: dict[str, list[str]] | None = Field(
        default=None,
        description="Generator: keep only cases whose input field has one of these values, "
        "e.g. {calculator: [anion_gap, bmi]}; None keeps every case.",
    )
    train: float = Field(default=0.8, ge=0, le=1, description="Share of cases in train.")
    eval: float = Field(default=0.1, ge=0, le=1, description="Share of cases in eval.")
    test: float = Field(default=0.1, ge=0, le=1, description="Share of cases in test.")
    inbox: Path | None = Field(
        default=None,
        description="Inbox folder with cases/ and feedback/ subfolders; default <home>/inbox.",
    )
    sql_uri: str | None = Field(
        default=None,
        description="Database URI for the sql source, without a password (it would be stored "
        "as a flow parameter and logged): the password comes from sql_password_secret or "
        "PONDER_SQL_PASSWORD.",
    )
    sql_password_secret: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the database password; None reads "
        "PONDER_SQL_PASSWORD from the environment (if set).",
    )
    sql_cases_query: str | None = Field(default=None, description="SQL returning case rows.")
    sql_feedback_query: str | None = Field(default=None, description="SQL returning feedback rows.")
    path: Path | None = Field(
        default=None,
        description="What a dataset source reads: the MedCalc-Bench CSV (medcalc_bench), or "
        "the folder of one IBM AML set, *_Trans.csv and *_Patterns.txt (ibm_aml).",
    )
    ibm_aml: IBMAmlOptions = Field(
        default_factory=IBMAmlOptions,
        description="ibm_aml: negative alerts, alert windows, size cap and sampling seed.",
    )
    max_prompt_tokens: int | None = Field(
        default=None,
        ge=16,
        le=10_000_000,
        description="Cases whose prompt is longer (in tokenizer_model's tokens) are "
        "quarantined with their count, never cut: the model's context minus the answer "
        "budget. None: no check.",
    )
    tokenizer_model: str | None = Field(
        default=None,
        description="Model (path or models:/ URI) whose tokenizer counts prompt tokens; None: "
        "the domain's policy champion, else the base policy (as infer resolves it).",
    )
    mlflow_experiment: str = Field(
        default="ponder-traces", description="Experiment whose traces carry feedback."
    )
    check_traces: bool = Field(
        default=True, description="Quarantine feedback whose trace is not in MLflow."
    )
    refresh_min_feedback: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Emit ponder.feedback.ready (which triggers refresh_reward) once this "
        "many new feedback rows have arrived since the last emission.",
    )
    max_file_mb: float = Field(
        default=2048, gt=0, le=65_536, description="Larger inbox files are quarantined whole."
    )

    @model_validator(mode="after")
    def _ratios(self) -> CollectParams:
        if abs(self.train + self.eval + self.test - 1.0) > 1e-9:
            raise ValueError(
                f"train + eval + test must be 1 (got "
                f"{self.train + self.eval + self.test:g}); fix the split ratios"
            )
        if "sql" in self.sources and not self.sql_uri:
            raise ValueError("source 'sql' needs sql_uri")
        datasets = [s for s in self.sources if s in DATASET_SOURCES]
        if len(datasets) > 1:
            raise ValueError(f"sources {datasets}: one dataset source per run (path is one)")
        if datasets and self.path is None:
            what = "CSV file" if datasets[0] == "medcalc_bench" else "folder"
            raise ValueError(f"source '{datasets[0]}' needs path (the dataset's {what})")
        if self.sql_uri and _has_password(self.sql_uri):
            raise ValueError(
                "sql_uri carries a password, which would be stored with the run's parameters "
                "and logged; remove it from the URI and set PONDER_SQL_PASSWORD or name a "
                "Prefect Secret block in sql_password_secret"
            )
        return self


class DatasetSummary(BaseModel):
    """What one collect run did to one dataset (cases or feedback)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="cases or feedback.")
    rows_in: int = Field(description="Rows read from every source.")
    valid: int = Field(description="Rows that passed validation.")
    quarantined: int = Field(description="Rows refused, with a reason, into the quarantine.")
    duplicates: int = Field(description="Valid rows already in the lake.")
    per_family: dict[str, int] = Field(description="New valid rows per family.")
    version: str | None = Field(description="The dataset's version after the run (new or not).")
    new_version: bool = Field(description="Whether this run committed a new version.")
    rows_total: int = Field(description="Rows in that version.")
    quarantine_file: str | None = Field(description="This run's quarantine file, if any.")
    path: str | None = Field(description="Folder of the new version, if one was made.")
    sources: list[str] = Field(
        default_factory=list,
        description="What each source read, e.g. medcalc_bench:FILE (label_disagreement: ...).",
    )

    @property
    def ref(self) -> str:
        """The version as a lake reference (``lake:cases@v00003``)."""
        return f"lake:{self.dataset}@{self.version}"


class CollectResult(BaseModel):
    """The result of one collect run."""

    model_config = ConfigDict(extra="forbid")

    cases: DatasetSummary = Field(description="The cases dataset.")
    feedback: DatasetSummary = Field(description="The feedback dataset.")


@flow(name="collect", log_prints=False)
def collect(params: CollectParams | None = None) -> CollectResult:
    """Gather, validate, dedupe, split and version cases and feedback for one domain."""
    params = params or CollectParams()
    ctx = StageContext.open(params.domain)
    ctx.settings.apply_environment()
    lake, log = ctx.lake, get_run_logger()
    inbox = params.inbox or ctx.settings.home / "inbox"
    cases, feedback = gather(ctx, params, inbox)
    watermark_key = f"mlflow_feedback-{params.mlflow_experiment}"
    newest, seen = None, None
    if "mlflow_feedback" in params.sources:
        state = lake.state(params.domain, watermark_key)
        frame, unusable, newest, seen = feedback_from_mlflow(
            ctx,
            experiment=params.mlflow_experiment,
            watermark_ms=int(state.get("last_ms", 0)),
            refs=case_refs(ctx),
        )
        feedback.frames.append(normalize_feedback(frame.lazy(), "mlflow"))
        feedback.rejected += unusable
        feedback.sources.append(f"mlflow:{params.mlflow_experiment}>{state.get('last_ms', 0)}")
    known = None
    if params.check_traces:  # reuse the trace listing the mlflow source already made
        known = seen if seen is not None else known_traces(params)
    summary_c = commit_cases(ctx, batch=cases)
    summary_f = commit_feedback(ctx, batch=feedback, known_traces=known)
    failpoint("collect.committed")
    mark_processed(cases.files, inbox, summary_c["version"])
    mark_processed(feedback.files, inbox, summary_f["version"])
    if newest is not None:
        lake.save_state(params.domain, watermark_key, {"last_ms": newest})
    summaries = [summary_c, summary_f]
    notify_feedback(ctx, summary=summary_f, threshold=params.refresh_min_feedback)
    record_in_mlflow(ctx, summaries=summaries, params=params.model_dump(mode="json"))
    publish_artifacts(ctx, summaries=summaries)
    for s in summaries:
        log.info(
            "%s: %s",
            s["dataset"],
            {k: s[k] for k in ("version", "new_version", "valid", "quarantined", "duplicates")},
        )
    return CollectResult(cases=summary_c, feedback=summary_f)


def notify_feedback(ctx: StageContext, *, summary: dict, threshold: int) -> bool:
    """Count new feedback rows across runs; at ``threshold`` emit the event that triggers
    ``refresh_reward`` (see deployments) and start counting again."""
    lake, domain = ctx.lake, ctx.name
    state = lake.state(domain, "feedback-pending")
    pending = int(state.get("rows", 0)) + summary["valid"] - summary["duplicates"]
    fire = pending >= threshold
    if fire:
        announce(FEEDBACK_READY, domain, new_rows=pending, version=summary["version"])
    lake.save_state(domain, "feedback-pending", {"rows": 0 if fire else pending})
    return fire


def gather(ctx: StageContext, params: CollectParams, inbox: Path) -> tuple[Batch, Batch]:
    """Run the case and feedback sources the params ask for."""
    cases, feedback = Batch(), Batch()
    split = (params.train, params.eval)
    if "generator" in params.sources and params.per_cell:
        _merge(
            cases,
            from_generator(
                ctx,
                per_cell=params.per_cell,
                seed=params.seed,
                train=params.train,
                eval_=params.eval,
                families=params.families,
                difficulties=params.difficulties,
                where=params.where,
            ),
        )
    if "files" in params.sources:
        _merge(
            cases,
            cases_from_files(
                ctx,
                inbox=inbox,
                train=params.train,
                eval_=params.eval,
                max_file_mb=params.max_file_mb,
            ),
        )
        _merge(feedback, feedback_from_files(inbox, params.max_file_mb))
    if "medcalc_bench" in params.sources and params.path is not None:
        _merge(cases, from_medcalc_bench(ctx, path=params.path, train=params.train,
                                         eval_=params.eval))  # fmt: skip
    if "ibm_aml" in params.sources and params.path is not None:
        _merge(cases, from_ibm_aml(ctx, path=params.path, options=params.ibm_aml,
                                   train=params.train, eval_=params.eval))  # fmt: skip
    if "sql" in params.sources and params.sql_uri:
        uri = SqlSource(uri=params.sql_uri, password=sql_password(params.sql_password_secret))
        if params.sql_cases_query:
            raw = from_sql("cases", uri, params.sql_cases_query).to_dicts()
            good, bad = validate_cases(ctx.domain, raw, "sql", *split)
            _merge(cases, Batch(rows=good, rejected=bad, sources=["sql"], rows_in=len(raw)))
        if params.sql_feedback_query:
            frame = from_sql("feedback", uri, params.sql_feedback_query)
            feedback.frames.append(normalize_feedback(frame.lazy(), "sql"))
            feedback.sources.append("sql")
    if params.max_prompt_tokens is not None and cases.rows:
        over_context(ctx, batch=cases, limit=params.max_prompt_tokens, model=params.tokenizer_model)
    return cases, feedback


def _has_password(uri: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(uri).password is not None
    except ArgumentError:
        return bool(re.search(r"://[^/@\s]*:[^/@\s]*@", uri))


def sql_password(secret: str | None) -> str | None:
    """The database password: a Prefect Secret block's value, else PONDER_SQL_PASSWORD."""
    if secret:
        from prefect.blocks.system import Secret

        return Secret.load(secret).get()
    return os.environ.get("PONDER_SQL_PASSWORD") or None


def known_traces(params: CollectParams) -> set[str]:
    """Trace ids in the feedback experiment (empty when it does not exist yet)."""
    return {t.info.trace_id for t in experiment_traces(params.mlflow_experiment)}


def _merge(into: Batch, other: Batch) -> None:
    into.rows += other.rows
    into.frames += other.frames
    into.rejected += other.rejected
    into.files += other.files
    into.sources += other.sources
    into.rows_in += other.rows_in

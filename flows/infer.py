"""Flow ``infer``: batch deep-reasoning inference over cases, resumable by shard.

Resolves the model once (recording the exact registry version), starts one engine, searches
each shard of cases with the chosen strategy, writes shard outputs atomically (a rerun skips
finished shards), commits a ``predictions`` version with its thought trees, renders the HTML
report, and logs metrics, the report and a sample of reviewable traces to MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    update_progress_artifact,
)
from pydantic import BaseModel, ConfigDict, Field, model_validator

from domains.base import Case, Domain, DomainName
from domains.calc import ToolNames
from domains.faults import failpoint
from models import progress as console_progress
from models.engine import MAX_COMPLETION, get_generator
from models.loading import ModelSpec
from models.redaction import learn as learn_identifiers
from models.search import SearchConfig, StrategyName
from models.search.scorers import LogprobScorer, OracleScorer
from models.tools import with_tools
from tasks.context import StageContext
from tasks.infer import (
    commit_predictions,
    fits,
    learned_scorer,
    load_cases,
    resolve_model,
    run_key,
    search_shard,
)
from tasks.tracking import log_inference_run


class InferParams(BaseModel):
    """Parameters of one batch-inference run (a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    domain: DomainName = Field(default="finance_risk", description="Registered domain name.")
    input: str = Field(
        default="lake:cases",
        description="lake:cases[@vNNNNN], a CSV/JSONL/Parquet path of cases, or "
        "medcalc_bench:PATH (the dataset's CSV as it ships).",
    )
    split: str | None = Field(default="test", description="Split filter for lake input.")
    model: str | None = Field(
        default=None,
        description="Path or models:/ URI; default the "
        "domain policy champion, else ponder-base-policy@champion.",
    )
    strategy: StrategyName = Field(default="beam", description="A key of models.search.STRATEGIES.")
    width: int = Field(default=4, ge=1, le=256, description="N: samples, beams or rollouts.")
    max_tokens: int = Field(
        default=512, ge=16, le=262_144, description="Generated-token cap per case."
    )
    step_tokens: int = Field(default=96, ge=8, le=8192, description="Cap per reasoning step.")
    max_depth: int = Field(default=6, ge=1, le=64, description="Most steps per path.")
    temperature: float = Field(default=0.8, ge=0, le=2, description="Sampling temperature.")
    scorer: Literal["policy_logprob", "learned", "oracle"] = Field(
        default="policy_logprob",
        description="learned = the domain's ORM/PRM champions; oracle uses labels (eval only).",
    )
    shard_size: int = Field(default=32, ge=1, le=100_000, description="Cases per resumable shard.")
    max_model_len: int = Field(
        default=4096, ge=256, le=131_072, description="Engine context length."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weight dtype for the engine."
    )
    log_traces: int = Field(default=5, ge=0, le=1000, description="Cases logged as MLflow traces.")
    review_k: int = Field(
        default=10,
        ge=0,
        le=10_000,
        description="Cases sent to the domain's MLflow review queue (wrong, then disagreeing "
        "paths, then least confident first); 0 sends none.",
    )
    seed: int = Field(ge=0, le=2**32 - 1, default=0, description="Sampling seed.")
    tools: ToolNames = None

    @model_validator(mode="after")
    def _per_path_cap(self) -> InferParams:
        if self.max_tokens > MAX_COMPLETION * self.width:
            raise ValueError(
                f"max_tokens {self.max_tokens} gives each of the {self.width} path(s) more "
                f"than the engine's {MAX_COMPLETION} tokens per completion; lower max_tokens "
                f"to at most {MAX_COMPLETION * self.width} or raise width"
            )
        return self

    def search_config(self) -> SearchConfig:
        return SearchConfig(
            width=self.width,
            max_tokens=self.max_tokens,
            step_tokens=self.step_tokens,
            max_depth=self.max_depth,
            temperature=self.temperature,
            seed=self.seed,
            branch=min(2, self.width),
        )


class InferResult(BaseModel):
    """The result of one inference run: the predictions version and its metrics."""

    model_config = ConfigDict(extra="forbid")

    cases: int = Field(description="Cases scored.")
    input: str = Field(description="The input as read (lake reference or file).")
    version: str | None = Field(description="predictions version committed; None if empty.")
    model: str | None = Field(default=None, description="Exact model version used.")
    rejected: int = Field(description="Input rows refused, into the quarantine.")
    too_long: int = Field(default=0, description="Cases longer than the model context.")
    accuracy: float | None = Field(default=None, description="Share correct (labelled cases).")
    tokens_per_case: float | None = Field(default=None, description="Generated tokens per case.")
    parse_rate: float | None = Field(default=None, description="Share with a parsed answer.")
    cases_per_s: float | None = Field(default=None, description="Throughput.")
    prefix_cache_hit_rate: float | None = Field(default=None, description="vLLM prefix cache.")
    report: str | None = Field(default=None, description="The HTML report's path.")
    queued: int = Field(default=0, description="Cases this run added to the review queue.")

    @property
    def ref(self) -> str | None:
        """The predictions version as a lake reference."""
        return f"lake:predictions@{self.version}" if self.version else None


@flow(name="infer")
def infer(params: InferParams | None = None) -> InferResult:
    """Search every case, persist predictions + trees, report, and log to MLflow."""
    params = params or InferParams()
    ctx = StageContext.open(params.domain)
    lake, log = ctx.lake, get_run_logger()
    cases, rejected, label = load_cases(ctx, source=params.input, split=params.split)
    learn_identifiers(params.domain, [c.inputs for c in cases])
    _quarantine(ctx, rejected, run_id=ctx.run_id, source=label)
    if not cases:
        log.warning("empty input %s: nothing to score", label)
        return InferResult(cases=0, input=label, version=None, rejected=len(rejected))
    uri, exact, local = resolve_model(ctx, model=params.model)
    spec = ModelSpec(model=str(local), max_model_len=params.max_model_len, dtype=params.dtype)
    domain = ctx.domain
    tools = domain.active_tools(params.tools)
    generator = with_tools(get_generator(spec), tools)
    cfg = params.search_config()
    fitting, too_long = _split_by_fit(
        params, cases, generator=generator, domain=domain, tools=tools
    )
    _quarantine(ctx, too_long, run_id=f"{ctx.run_id}-long", source=None)
    key = run_key(label, exact, params.strategy, cfg, tools)
    out_dir = lake.dataset_dir(params.domain, "predictions") / "_runs" / key
    meta = {"model_uri": uri, "model_version": exact, "run_key": key, "input": label}
    scorer = _scorer(params, domain, fitting)
    shards = _shards(params, fitting)
    _search_shards(
        ctx,
        params,
        shards,
        generator=generator,
        tools=tools,
        out_dir=out_dir,
        meta=meta,
        scorer=scorer,
    )
    ids = [[c.id for c in shard] for shard in shards]
    version, frame = commit_predictions(ctx, out_dir=out_dir, sources=[label, exact],
                                        shards=ids)  # fmt: skip
    summary = log_inference_run(
        ctx,
        params=params.model_dump(),
        frame=frame,
        version=version,
        out_dir=out_dir,
        cases=fitting,
        generator=generator,
    )
    metrics = {k: v for k, v in summary["metrics"].items() if k != "cases"}
    return InferResult(cases=len(fitting), input=label, version=version, model=exact,
                       rejected=len(rejected), too_long=len(too_long), **metrics,
                       report=summary["report"], queued=summary["queued"])  # fmt: skip


def _split_by_fit(
    params: InferParams, cases: list[Case], *, generator: Any, domain: Domain, tools: list[str]
) -> tuple[list[Case], list[dict]]:
    """The cases whose prompt fits the model context, and a rejection row for each other."""
    cfg = params.search_config()
    fit = [
        fits(generator, domain, c, cfg, max_len=params.max_model_len, tools=tools) for c in cases
    ]
    too_long = [
        {"row": None, "source": c.id, "reason": "prompt longer than the model context", "raw": c.id}
        for c, ok in zip(cases, fit, strict=True)
        if not ok
    ]
    return [c for c, ok in zip(cases, fit, strict=True) if ok], too_long


def _quarantine(
    ctx: StageContext, rejected: list[dict], *, run_id: str, source: str | None
) -> None:
    """Rows that were not scored, with their reasons, into the predictions quarantine."""
    if not rejected:
        return
    rows = [
        {
            "row": r.get("row"),
            "source": source or r["source"],
            "reason": r["reason"],
            "raw": str(r.get("raw")),
        }
        for r in rejected
    ]
    ctx.lake.quarantine(ctx.name, "predictions", pl.DataFrame(rows), run_id)


def _search_shards(
    ctx: StageContext,
    params: InferParams,
    shards: list[list[Case]],
    *,
    generator: object,
    tools: list[str],
    out_dir: Path,
    meta: dict,
    scorer: object,
) -> None:
    """Search each shard and write it (a rerun skips finished shards), with progress."""
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(len(shard) for shard in shards)
    progress = create_progress_artifact(
        progress=0.0,
        key=f"infer-{meta['run_key']}",
        description=f"infer {params.domain} {params.strategy}",
    )
    for n, shard in enumerate(shards):
        search_shard(
            ctx,
            index=n,
            cases=shard,
            strategy=params.strategy,
            cfg=params.search_config(),
            generator=generator,
            scorer=scorer,
            out_dir=out_dir,
            meta=meta,
            tools=tools,
        )
        update_progress_artifact(progress, progress=100.0 * (n + 1) / len(shards))
        console_progress.step("cases", min(total, (n + 1) * params.shard_size), total)
        failpoint("infer.shard")


def _shards(params: InferParams, cases: list[Case]) -> list[list[Case]]:
    """The run's shards: ``shard_size`` cases each, in input order."""
    return [cases[i : i + params.shard_size] for i in range(0, len(cases), params.shard_size)]


def _scorer(params: InferParams, domain, cases) -> object:
    if params.scorer == "policy_logprob":
        return LogprobScorer()
    if params.scorer == "learned":
        return learned_scorer(params.domain)
    by_id = {c.id: c for c in cases}
    return OracleScorer(lambda pid, text: domain.check(text, by_id[pid]).score)

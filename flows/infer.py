"""Flow ``infer``: batch deep-reasoning inference over cases, resumable by shard.

Resolves the model once (recording the exact registry version), starts one engine, searches
each shard of cases with the chosen strategy, writes shard outputs atomically (a rerun skips
finished shards), commits a ``predictions`` version with its thought trees, renders the HTML
report, and logs metrics, the report and a sample of reviewable traces to MLflow.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.runtime import deployment as this_deployment
from pydantic import BaseModel, ConfigDict, Field, model_validator

from domains.base import Case, Domain, DomainName
from domains.calc import ToolNames
from domains.errors import PonderError
from domains.faults import failpoint
from models import progress as console_progress
from models.engine import MAX_COMPLETION, TokenizerOnly, get_generator
from models.loading import ModelSpec
from models.search import SearchConfig, StrategyName
from models.search.scorers import LogprobScorer, OracleScorer
from models.tools import with_tools
from tasks import fanout
from tasks.context import StageContext
from tasks.infer import (
    CaseStore,
    commit_predictions,
    fits,
    learned_scorer,
    load_cases,
    resolve_model,
    run_dir,
    run_key,
    search_shard,
)
from tasks.tracking import log_inference_run


class ShardRange(BaseModel):
    """One shard of a parent's run, by reference: its index and its case-id range."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, le=10_000_000, description="The shard's index in the parent's run.")
    first: str = Field(description="Its first case id (cases are in id order).")
    last: str = Field(description="Its last case id (inclusive).")


class ChildShards(BaseModel):
    """What a fan-out parent hands a child: references only (the shards of its run key)."""

    model_config = ConfigDict(extra="forbid")

    run_key: str = Field(description="The parent's run key; the child checks it matches its own.")
    shards: list[ShardRange] = Field(min_length=1, description="The shards this child searches.")
    epoch: str = Field(description="The parent's fencing epoch (its flow run id).")
    model_uri: str = Field(description="The model as the parent was asked for it (rows keep it).")


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
    workers: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="N > 1 fans the shards out as child runs of the domain's infer deployment "
        "(each starts its own engine on a worker of that deployment's pool), at most N at "
        "once; with no Prefect server or no such deployment, the run says so and searches "
        "in-process.",
    )
    deployment: str | None = Field(
        default=None,
        description="The children's deployment, flow/deployment; default infer/infer-<domain> "
        "(with '-' for '_').",
    )
    child_retries: int = Field(
        default=2,
        ge=0,
        le=20,
        description="Times a crashed child (its process or worker died) is submitted again; "
        "the shards it finished are reused.",
    )
    child: ChildShards | None = Field(
        default=None,
        description="Set by a fan-out parent, never by hand: this run searches only these "
        "shards of the parent's run and commits nothing.",
    )

    @model_validator(mode="after")
    def _child_runs_alone(self) -> InferParams:
        if self.child is not None and self.workers > 1:
            raise ValueError("a fan-out child searches its own shards: set workers to 1")
        return self

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
    seconds: dict[str, float] = Field(
        default_factory=dict,
        description="Wall seconds per stage: prepare (input, model, engine or tokenizer), "
        "search (in-process, or the children's wait), commit, report (metrics, traces, "
        "review queue, HTML report, MLflow run).",
    )
    peak_mb: dict[str, float] = Field(
        default_factory=dict,
        description="This process's peak resident memory (MB) at the end of each stage.",
    )

    @property
    def ref(self) -> str | None:
        """The predictions version as a lake reference."""
        return f"lake:predictions@{self.version}" if self.version else None


@flow(name="infer")
def infer(params: InferParams | None = None) -> InferResult:
    """Search every case, persist predictions + trees, report, and log to MLflow."""
    params = params or InferParams()
    ctx = StageContext.open(params.domain)
    if params.child is not None:
        return _child(ctx, params, params.child)
    log, laps = get_run_logger(), Laps()
    store, rejected, label = load_cases(ctx, source=params.input, split=params.split)
    _quarantine(ctx, rejected, run_id=ctx.run_id, source=label)
    if not len(store):
        log.warning("empty input %s: nothing to score", label)
        return InferResult(cases=0, input=label, version=None, rejected=len(rejected))
    uri, exact, local = resolve_model(ctx, model=params.model)
    spec = ModelSpec(model=str(local), max_model_len=params.max_model_len, dtype=params.dtype)
    target = _fan_out_target(params)
    domain, tools = ctx.domain, ctx.domain.active_tools(params.tools)
    generator = TokenizerOnly(spec) if target else with_tools(get_generator(spec), tools)
    too_long = _drop_unfit(params, store, generator=generator, domain=domain, tools=tools)
    _quarantine(ctx, too_long, run_id=f"{ctx.run_id}-long", source=None)
    key = run_key(label, exact, params.strategy, params.search_config(), tools)
    out_dir = run_dir(ctx, key)
    meta = {"model_uri": uri, "model_version": exact, "run_key": key, "input": label}
    shards = _shards(params, store.ids())
    laps.lap("prepare")
    if target:
        pinned = _pinned_input(params.input, label)
        child_model = exact if exact.startswith("models:/") else str(local)
        _fan_out(ctx, params, target, key=key, out_dir=out_dir, shards=shards,
                 base=params.model_copy(update={"input": pinned, "model": child_model}),
                 model_uri=uri)  # fmt: skip
    else:
        scorer = _scorer(params, domain, store.get)
        _search_shards(ctx, params, list(enumerate(shards)), cases=store.get,
                       generator=generator, tools=tools, out_dir=out_dir, meta=meta,
                       scorer=scorer)  # fmt: skip
    laps.lap("search")
    version, frame = commit_predictions(ctx, out_dir=out_dir, sources=[label, exact],
                                        shards=shards)  # fmt: skip
    if target:
        fanout.claim(out_dir, f"committed {version}")  # late children of any parent stop here
    laps.lap("commit")
    summary = log_inference_run(
        ctx,
        params=params.model_dump(),
        frame=frame,
        version=version,
        cases=store,
        generator=generator,
    )
    laps.lap("report")
    metrics = {k: v for k, v in summary["metrics"].items() if k != "cases"}
    return InferResult(cases=len(store), input=label, version=version, model=exact,
                       rejected=len(rejected), too_long=len(too_long), **metrics,
                       report=summary["report"], queued=summary["queued"],
                       seconds=laps.seconds, peak_mb=laps.peak_mb)  # fmt: skip


class Laps:
    """Wall seconds between named moments of a run (its stages' durations), and this
    process's peak resident memory when each stage ends (which stage makes the peak)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}

    def lap(self, name: str) -> None:
        """The stage ``name`` ends now."""
        import resource

        now = time.perf_counter()
        self.seconds[name] = round(now - self.start, 3)
        self.peak_mb[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        self.start = now


def _fan_out_target(params: InferParams) -> UUID | None:
    """The children's deployment when ``workers`` > 1 and a server holds it; else None, and
    the log says why the run searches in-process."""
    if params.workers <= 1:
        return None
    name = params.deployment or fanout.default_deployment(params.domain)
    target, why = fanout.find_deployment(name)
    if target is None:
        get_run_logger().warning("workers=%d but %s: searching in-process", params.workers, why)
    elif str(target) == str(this_deployment.id):
        raise PonderError(
            "workers",
            f"this parent runs on {name}, the deployment of its own children: it would hold "
            "a worker slot they need",
            "start it from a shell (`ponder infer --workers N`) or from the "
            "infer-batch-<domain> deployment on ponder-cpu",
        )
    return target


def _pinned_input(source: str, label: str) -> str:
    """The input as the children must read it: a lake reference pinned to the version the
    parent read (a newer collect must not change a child's cases); a file path as it is
    (its digest is part of the run key the child checks)."""
    if not source.startswith("lake:"):
        return source
    version = label.partition("@")[2].partition("[")[0]
    return f"lake:cases@{version}"


def _fan_out(
    ctx: StageContext,
    params: InferParams,
    target: UUID,
    *,
    key: str,
    out_dir: Path,
    shards: list[list[str]],
    base: InferParams,
    model_uri: str,
) -> None:
    """Run the shards as child flow runs (``tasks.fanout``) and wait for them; a rerun of
    this parent cancels older children and reuses every finished shard."""
    log = get_run_logger()
    cancelled = fanout.cancel_older(key, keep=ctx.run_id)
    if cancelled:
        log.warning("cancelled %d child run(s) of an older parent of run %s", cancelled, key)
    fanout.claim(out_dir, ctx.run_id)
    fanout.ensure_limit(key, params.workers)

    def params_for(block: list[int]) -> dict:
        ranges = [ShardRange(index=i, first=shards[i][0], last=shards[i][-1]) for i in block]
        child = ChildShards(run_key=key, shards=ranges, epoch=ctx.run_id, model_uri=model_uri)
        return base.model_copy(update={"workers": 1, "child": child}).model_dump(mode="json")

    blocks = fanout.split_children(len(shards), params.workers)
    children = fanout.Children(deployment=target, key=key, params_for=params_for,
                               blocks={f"shards-{b[0]:05d}-{b[-1]:05d}": b for b in blocks},
                               retries=params.child_retries)  # fmt: skip
    log.info("fan-out: %d shards in %d child runs, at most %d at once", len(shards),
             len(blocks), params.workers)  # fmt: skip
    try:
        for name in children.blocks:
            children.submit(name)
        children.wait(on_done=lambda done, total: console_progress.step("children", done, total))
    except BaseException:
        children.cancel_unfinished()
        raise
    finally:
        fanout.drop_limit(key)


def _child(ctx: StageContext, params: InferParams, child: ChildShards) -> InferResult:
    """A fan-out child: search the parent's shards ``child.shards`` with an engine of its own,
    holding one of the run's concurrency slots; commit nothing (the parent gathers). Only
    the cases inside its shards' id ranges are checked against the context and searched."""
    from prefect.concurrency.sync import concurrency

    ranges = [(r.first, r.last) for r in child.shards]
    store, _, label = load_cases(ctx, source=params.input, split=params.split,
                                 keep=lambda i: any(a <= i <= b for a, b in ranges))  # fmt: skip
    _, exact, local = resolve_model(ctx, model=params.model)
    domain, tools = ctx.domain, ctx.domain.active_tools(params.tools)
    key = run_key(label, exact, params.strategy, params.search_config(), tools)
    if key != child.run_key:
        raise PonderError(
            "child.run_key",
            f"this child's input or model gives run key {key}, its parent's is {child.run_key}",
            "rerun the parent: its input or model changed under it",
        )
    spec = ModelSpec(model=str(local), max_model_len=params.max_model_len, dtype=params.dtype)
    generator = with_tools(get_generator(spec), tools)
    picked = _child_shards(params, child, store, generator=generator, domain=domain, tools=tools)
    meta = {"model_uri": child.model_uri, "model_version": exact, "run_key": key, "input": label}
    out_dir = run_dir(ctx, key)
    by_id = {c.id: c for _, shard in picked for c in shard}

    def lookup(ids: list[str]) -> list[Case]:
        return [by_id[i] for i in ids]

    with concurrency(fanout.limit_name(key), occupy=1, lease_duration=fanout.LEASE_S):
        _search_shards(ctx, params, [(i, [c.id for c in shard]) for i, shard in picked],
                       cases=lookup, generator=generator, tools=tools, out_dir=out_dir,
                       meta=meta, scorer=_scorer(params, domain, lookup),
                       epoch=child.epoch)  # fmt: skip
    return InferResult(cases=sum(len(s) for _, s in picked), input=label, version=None,
                       model=exact, rejected=0)  # fmt: skip


def _child_shards(
    params: InferParams,
    child: ChildShards,
    store: CaseStore,
    *,
    generator: Any,
    domain: Domain,
    tools: list[str],
) -> list[tuple[int, list[Case]]]:
    """(index, cases) of each of the child's shards: the fitting cases in its id range,
    which must start and end where the parent's shard did. The store is in id order
    (``load_cases`` sorts it), so each range is found by bisection."""
    ids = store.ids()
    out = []
    for r in child.shards:
        inside = store.get(ids[bisect_left(ids, r.first) : bisect_right(ids, r.last)])
        shard, _ = _split_by_fit(params, inside, generator=generator, domain=domain, tools=tools)
        if not shard or (shard[0].id, shard[-1].id) != (r.first, r.last):
            raise PonderError(
                "child.shards",
                f"shard {r.index} does not hold the cases its parent gave it",
                "rerun the parent: its input changed under it",
            )
        out.append((r.index, shard))
    return out


def _drop_unfit(
    params: InferParams, store: CaseStore, *, generator: Any, domain: Domain, tools: list[str]
) -> list[dict]:
    """Drop from ``store`` the cases whose prompt does not fit the model context, checked
    ``FIT_BATCH`` at a time; a rejection row for each."""
    too_long: list[dict] = []
    ids = store.ids()
    for start in range(0, len(ids), FIT_BATCH):
        batch = store.get(ids[start : start + FIT_BATCH])
        _, rows = _split_by_fit(params, batch, generator=generator, domain=domain, tools=tools)
        store.drop(r["source"] for r in rows)
        too_long += rows
    return too_long


FIT_BATCH = 1000  # cases rebuilt at a time for the context check


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
    shards: list[tuple[int, list[str]]],
    *,
    cases: Callable[[list[str]], list[Case]],
    generator: object,
    tools: list[str],
    out_dir: Path,
    meta: dict,
    scorer: object,
    epoch: str | None = None,
) -> None:
    """Search each (index, case ids) shard and write it (a rerun skips finished shards), with
    progress; ``cases`` rebuilds a shard's cases from its ids (one shard at a time), and a
    fan-out child passes its parent's fencing ``epoch``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(len(shard) for _, shard in shards)
    progress = create_progress_artifact(
        progress=0.0,
        key=f"infer-{meta['run_key']}",
        description=f"infer {params.domain} {params.strategy}",
    )
    for n, (index, shard) in enumerate(shards):
        search_shard(
            ctx,
            index=index,
            cases=cases(shard),
            strategy=params.strategy,
            cfg=params.search_config(),
            generator=generator,
            scorer=scorer,
            out_dir=out_dir,
            meta=meta,
            tools=tools,
            epoch=epoch,
        )
        update_progress_artifact(progress, progress=100.0 * (n + 1) / len(shards))
        console_progress.step("cases", min(total, (n + 1) * params.shard_size), total)
        failpoint("infer.shard")


def _shards(params: InferParams, ids: list[str]) -> list[list[str]]:
    """The run's shards as case ids: ``shard_size`` cases each, in input order."""
    return [ids[i : i + params.shard_size] for i in range(0, len(ids), params.shard_size)]


def _scorer(
    params: InferParams, domain: Domain, cases: Callable[[list[str]], list[Case]]
) -> object:
    if params.scorer == "policy_logprob":
        return LogprobScorer()
    if params.scorer == "learned":
        return learned_scorer(params.domain)
    return OracleScorer(lambda pid, text: domain.check(text, cases([pid])[0]).score)

"""Flow ``infer``: batch deep-reasoning inference over cases, resumable by shard.

Resolves the model once (recording the exact registry version), starts one engine, searches
each shard of cases with the chosen strategy, writes shard outputs atomically (a rerun skips
finished shards), commits a ``predictions`` version with its thought trees, renders the HTML
report, and logs metrics, the report and a sample of reviewable traces to MLflow.
"""

from __future__ import annotations

import uuid
from typing import Literal

import polars as pl
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, model_validator

from domains.base import get_domain
from domains.calc import ToolNames
from domains.faults import failpoint
from models import progress as console_progress
from models.engine import MAX_COMPLETION, get_generator
from models.loading import ModelSpec
from models.redaction import install as install_redaction
from models.redaction import learn as learn_identifiers
from models.search import SearchConfig, get_strategy
from models.search.scorers import LogprobScorer, OracleScorer
from models.settings import get_settings
from models.tools import with_tools
from tasks.artifacts import table_artifact
from tasks.infer import (
    commit_predictions,
    fits,
    learned_scorer,
    load_cases,
    resolve_model,
    run_key,
    search_shard,
)
from tasks.lake import Lake
from tasks.tracking import log_inference_run


class InferParams(BaseModel):
    """Parameters of one batch-inference run (a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    domain: str = Field(default="finance_risk", description="Registered domain name.")
    input: str = Field(
        default="lake:cases", description="lake:cases[@vNNNNN] or a CSV/JSONL/Parquet path."
    )
    split: str | None = Field(default="test", description="Split filter for lake input.")
    model: str | None = Field(
        default=None,
        description="Path or models:/ URI; default the "
        "domain policy champion, else ponder-base-policy@champion.",
    )
    strategy: str = Field(default="beam", description="A key of models.search.STRATEGIES.")
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


@flow(name="infer")
def infer(params: InferParams | None = None) -> dict:
    """Search every case, persist predictions + trees, report, and log to MLflow."""
    params = params or InferParams()
    install_redaction()  # logs and trace spans of this process are masked
    log, settings = get_run_logger(), get_settings()
    get_strategy(params.strategy)  # fail fast with the valid names
    lake = Lake(settings.lake_root)
    cases, rejected, label = load_cases(lake, params.domain, params.input, params.split)
    learn_identifiers(params.domain, [c.inputs for c in cases])
    run_id = flow_run.get_id() or uuid.uuid4().hex
    if rejected:
        rows = [
            {"row": r.get("row"), "source": label, "reason": r["reason"], "raw": str(r.get("raw"))}
            for r in rejected
        ]
        lake.quarantine(params.domain, "predictions", pl.DataFrame(rows), run_id)
    if not cases:
        log.warning("empty input %s: nothing to score", label)
        return {"cases": 0, "input": label, "version": None, "rejected": len(rejected)}
    uri, exact, local = resolve_model(params.domain, params.model)
    cfg = params.search_config()
    spec = ModelSpec(model=str(local), max_model_len=params.max_model_len, dtype=params.dtype)
    domain = get_domain(params.domain)
    tools = domain.active_tools(params.tools)
    generator = with_tools(get_generator(spec), tools)
    too_long = [
        c for c in cases if not fits(generator, domain, c, cfg, params.max_model_len, tools)
    ]
    cases = [c for c in cases if c not in too_long]
    skipped = [
        {"row": None, "source": c.id, "reason": "prompt longer than the model context", "raw": c.id}
        for c in too_long
    ]
    if skipped:
        lake.quarantine(params.domain, "predictions", pl.DataFrame(skipped), f"{run_id}-long")
    key = run_key(label, exact, params.strategy, cfg, tools)
    out_dir = lake.dataset_dir(params.domain, "predictions") / "_runs" / key
    out_dir.mkdir(parents=True, exist_ok=True)
    scorer = _scorer(params, domain, cases)
    meta = {"model_uri": uri, "model_version": exact, "run_key": key, "input": label}
    shards = [cases[i : i + params.shard_size] for i in range(0, len(cases), params.shard_size)]
    progress = create_progress_artifact(
        progress=0.0, key=f"infer-{key}", description=f"infer {params.domain} {params.strategy}"
    )
    for n, shard in enumerate(shards):
        search_shard(
            n, shard, params.domain, params.strategy, cfg, generator, scorer, out_dir, meta, tools
        )
        update_progress_artifact(progress, progress=100.0 * (n + 1) / len(shards))
        console_progress.step("cases", min(len(cases), (n + 1) * params.shard_size), len(cases))
        failpoint("infer.shard")
    version, frame = commit_predictions(lake, params.domain, out_dir, [label, exact])
    summary = log_inference_run(
        params.model_dump(),
        frame,
        lake,
        params.domain,
        version,
        out_dir,
        cases,
        params.log_traces,
        generator,
    )
    table_artifact(
        domain=params.domain,
        table=summary["table"],
        key=f"infer-{params.domain.replace('_', '-')}",
        description="accuracy / tokens by family and difficulty",
    )
    return {
        "cases": len(cases),
        "input": label,
        "version": version,
        "model": exact,
        "rejected": len(rejected),
        "too_long": len(too_long),
        **summary["metrics"],
        "report": summary["report"],
    }


def _scorer(params: InferParams, domain, cases) -> object:
    if params.scorer == "policy_logprob":
        return LogprobScorer()
    if params.scorer == "learned":
        return learned_scorer(params.domain)
    by_id = {c.id: c for c in cases}
    return OracleScorer(lambda pid, text: domain.check(text, by_id[pid]).score)

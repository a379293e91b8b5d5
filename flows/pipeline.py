"""Flow ``pipeline``: the whole loop once, in order, for demos and backfills.

collect -> rollouts (thought trees for the reward data) -> refresh_reward -> finetune ->
evaluate_promote -> infer (batch scoring with beam search, HTML report). Each stage is the
real flow, run as a subflow of this one; the GPU stages run in a fresh spawned process each
(``isolate``), so every stage gets all of the accelerator and gives it back at exit. Stages
pass only references: lake versions (``lake:cases@v00003``) and registry URIs
(``models:/ponder-medicine-policy/4``). In production the same stages run as separate
deployments chained by events (``deployments/prefect.yaml``); this flow is the one-shot path.
"""

from __future__ import annotations

import importlib
from typing import Any

import cloudpickle
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.context import hydrated_context, serialize_context
from pydantic import BaseModel, ConfigDict, Field, model_validator

from domains.base import DomainName
from flows.collect import CollectParams, CollectResult
from flows.evaluate_promote import EvaluateParams, EvaluateResult
from flows.finetune import FinetuneParams, FinetuneResult
from flows.infer import InferParams, InferResult
from flows.options import flow_schema
from flows.refresh_reward import RefreshParams, RefreshResult
from models import progress as console_progress
from models.isolation import run_isolated
from models.redaction import install as install_redaction
from models.registry import list_versions, model_name
from tasks.artifacts import markdown_artifact

STAGES = ("collect", "rollouts", "refresh", "finetune", "evaluate", "infer")
FLOWS = {  # stage -> the flow it runs, as an import reference (spawned children import it)
    "collect": "flows.collect:collect",
    "rollouts": "flows.infer:infer",
    "refresh": "flows.refresh_reward:refresh_reward",
    "finetune": "flows.finetune:finetune",
    "evaluate": "flows.evaluate_promote:evaluate_promote",
    "infer": "flows.infer:infer",
}
ON_ACCELERATOR = {"rollouts", "refresh", "finetune", "evaluate", "infer"}


def _rollouts() -> InferParams:
    return InferParams(split=None, strategy="self_consistency", width=4, log_traces=0)


class PipelineParams(BaseModel):
    """The loop's stages with their own parameters; a stage set to None is skipped. The
    pipeline's ``domain`` is given to every stage (a stage naming another one is refused)."""

    model_config = ConfigDict(extra="forbid")

    domain: DomainName = Field(
        default="medicine", description="Registered domain name, all stages."
    )
    collect: CollectParams | None = Field(
        default_factory=CollectParams, description="New cases and feedback into the lake."
    )
    rollouts: InferParams | None = Field(
        default_factory=_rollouts,
        description="Search over every split; the stored thought trees give the reward refresh "
        "its verifier pairs and step targets (train split) and its held-out check (the rest). "
        "None when trees are already stored.",
    )
    refresh: RefreshParams | None = Field(
        default_factory=RefreshParams, description="Retrain and gate the ORM/PRM."
    )
    finetune: FinetuneParams | None = Field(
        default_factory=FinetuneParams, description="SFT + GRPO; registers the challenger."
    )
    evaluate: EvaluateParams | None = Field(
        default_factory=EvaluateParams, description="Challenger vs champion; promote on evidence."
    )
    infer: InferParams | None = Field(
        default_factory=lambda: InferParams(strategy="beam"),
        description="Batch scoring with the (new) champion; writes predictions and the report.",
    )
    isolate: bool = Field(
        default=True,
        description="Run each GPU stage in its own spawned process (memory back at exit).",
    )

    @model_validator(mode="after")
    def _one_domain(self) -> PipelineParams:
        for stage in STAGES:
            cfg = getattr(self, stage)
            if cfg is None:
                continue
            if "domain" in cfg.model_fields_set and cfg.domain != self.domain:
                raise ValueError(
                    f"{stage}.domain is {cfg.domain!r} but the pipeline runs {self.domain!r}; "
                    "drop the stage's domain or set the pipeline's"
                )
            setattr(self, stage, cfg.model_copy(update={"domain": self.domain}))
        return self


class StageResults(BaseModel):
    """What each stage returned (None: skipped)."""

    model_config = ConfigDict(extra="forbid")

    collect: CollectResult | None = Field(default=None, description="collect.")
    rollouts: InferResult | None = Field(default=None, description="rollouts (an infer run).")
    refresh: RefreshResult | None = Field(default=None, description="refresh_reward.")
    finetune: FinetuneResult | None = Field(default=None, description="finetune.")
    evaluate: EvaluateResult | None = Field(default=None, description="evaluate_promote.")
    infer: InferResult | None = Field(default=None, description="infer.")


class References(BaseModel):
    """What the stages produced, as references the next stage takes."""

    model_config = ConfigDict(extra="forbid")

    cases: str | None = Field(default=None, description="lake:cases@vNNNNN.")
    rollouts_predictions: str | None = Field(default=None, description="lake:predictions@v.")
    orm: str | None = Field(default=None, description="models:/ URI of a promoted ORM.")
    prm: str | None = Field(default=None, description="models:/ URI of a promoted PRM.")
    challenger: str | None = Field(default=None, description="models:/ URI of the challenger.")
    champion: str | None = Field(default=None, description="models:/ URI, when promoted.")
    infer_predictions: str | None = Field(default=None, description="lake:predictions@v.")


class PipelineResult(BaseModel):
    """The result of one pipeline run."""

    model_config = ConfigDict(extra="forbid")

    domain: str = Field(description="The domain every stage ran.")
    references: References = Field(description="What the stages produced.")
    stages: StageResults = Field(description="Each stage's own result.")
    registry: list[dict[str, Any]] = Field(description="The domain's registry after the run.")


@flow(name="pipeline")
def pipeline(params: PipelineParams | None = None) -> PipelineResult:
    """Every stage once, in order; returns what each produced (references only)."""
    params = params or PipelineParams()
    install_redaction()  # masked logs here too; each stage opens its own StageContext
    log = get_run_logger()
    done, refs = StageResults(), References()
    progress = create_progress_artifact(progress=0.0, description=f"pipeline {params.domain}")
    for n, stage in enumerate(STAGES):
        cfg = getattr(params, stage)
        if cfg is not None:
            cfg = _wire(stage, cfg, refs)
            log.info("stage %d/%d %s", n + 1, len(STAGES), stage)
            console_progress.stage(stage, n + 1, len(STAGES))
            isolate = params.isolate and stage in ON_ACCELERATOR
            setattr(done, stage, run_stage(FLOWS[stage], cfg, isolate=isolate))
            refs = refs.model_copy(update=_references(stage, getattr(done, stage), params.domain))
        update_progress_artifact(progress, progress=100.0 * (n + 1) / len(STAGES))
    summary = PipelineResult(
        domain=params.domain, references=refs, stages=done, registry=registry_state(params.domain)
    )
    markdown_artifact(
        domain=params.domain,
        key=f"pipeline-{params.domain.replace('_', '-')}",
        markdown=markdown(summary),
    )
    return summary


def _wire(stage: str, cfg: BaseModel, refs: References) -> BaseModel:
    """Point a stage at what the earlier stages produced (fields the user left unset)."""
    cases = refs.cases
    update: dict[str, Any] = {}
    unset = set(type(cfg).model_fields) - cfg.model_fields_set
    if stage in ("rollouts", "infer") and cases and "input" in unset:
        update["input"] = cases
    if stage in ("finetune", "evaluate") and cases and "dataset_version" in unset:
        update["dataset_version"] = cases.rsplit("@", 1)[1]
    if stage == "finetune" and refs.orm and "orm" in unset:
        update["orm"] = refs.orm
    if stage == "evaluate" and refs.challenger and "challenger" in unset:
        update["challenger"] = refs.challenger
    if stage == "infer" and refs.champion and "model" in unset:
        update["model"] = refs.champion
    return cfg.model_copy(update=update)


def _references(stage: str, out: Any, domain: str) -> dict[str, str]:
    """The references a stage produced, for the stages after it."""
    if isinstance(out, CollectResult):
        return {"cases": out.cases.ref}
    if isinstance(out, RefreshResult):
        return out.promoted_uris(domain)
    if isinstance(out, FinetuneResult):
        return {"challenger": f"models:/{model_name(domain, 'policy')}/{out.version}"}
    if isinstance(out, EvaluateResult):
        return {"champion": out.uri} if out.promoted else {}
    if isinstance(out, InferResult) and out.ref:
        return {f"{stage}_predictions": out.ref}
    return {}


def run_stage(ref: str, params: BaseModel, isolate: bool = False) -> Any:
    """Run the flow at ``ref`` (``module:name``) with ``params`` as a subflow of the current
    flow run: here, or in a spawned process that carries this run's Prefect context and API
    address (so the child reports to the same server, under this run)."""
    if not isolate:
        return load_ref(ref)(params)
    context = cloudpickle.dumps(serialize_context())
    env = {"PREFECT_API_URL": api_url()}
    return run_isolated(_child, ref, params.model_dump(mode="json"), context, env=env, what=ref)


def _child(ref: str, params: dict[str, Any], context: bytes) -> Any:
    from models.engine import scoped_generators

    fn = load_ref(ref)
    # engines close before the child returns: a live vLLM engine process would keep the
    # child from exiting, and the parent waits for that exit
    with hydrated_context(cloudpickle.loads(context)), scoped_generators():
        return fn(flow_schema(fn)(**params))


def load_ref(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def api_url() -> str:
    """This process's Prefect API (the temporary local server's address when none is set)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


def registry_state(domain: str) -> list[dict[str, Any]]:
    """Every version of the domain's models and the base policy, with aliases."""
    rows = []
    for kind in ("policy", "orm", "prm"):
        rows += list_versions(prefix=model_name(domain, kind))
    return rows + list_versions(prefix="ponder-base-policy")


def markdown(summary: PipelineResult) -> str:
    """The Prefect artifact: what each stage produced, and the registry after the run."""
    lines = [f"# pipeline {summary.domain}", "", "| reference | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in summary.references.model_dump().items() if v]
    if summary.stages.infer and summary.stages.infer.report:
        lines += ["", f"HTML report: `{summary.stages.infer.report}`"]
    lines += ["", "| model | version | aliases |", "|---|---|---|"]
    lines += [
        f"| {r['name']} | {r['version']} | {' '.join('@' + a for a in r['aliases'])} |"
        for r in summary.registry
    ]
    return "\n".join(lines) + "\n"

"""Flow ``refresh_reward``: retrain the outcome and process reward models from feedback.

Builds preference pairs and step targets from the lake (feedback, stored thought trees,
Monte-Carlo rollouts with the policy), trains a challenger ORM (TRL RewardTrainer) and PRM,
scores challenger and champion on the same held-out cases, logs metrics and plots to
MLflow, registers the challengers and promotes each only through the gate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import mlflow
from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from domains.base import Domain, DomainName
from models.engine import SamplingConfig, get_generator, scoped_generators
from models.loading import ModelSpec
from models.prm import ProcessRM, train_prm
from models.redaction import learn as learn_identifiers
from models.registry import connect, ensure_experiment, model_name, register_hf_dir
from models.reward import RMTrainConfig, train_orm
from models.runs import tracked_run
from tasks import reward as rw
from tasks import reward_data as rd
from tasks.artifacts import table_artifact
from tasks.context import StageContext
from tasks.events import REWARD_PROMOTED, announce
from tasks.infer import resolve_model

# a pair source's resampling weight: finite, not negative, and bounded
Weight = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]


class RefreshParams(BaseModel):
    """Parameters of one reward refresh (a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    domain: DomainName = Field(default="medicine", description="Registered domain name.")
    policy: str | None = Field(
        default=None,
        description="Policy for MC rollouts (path or models:/ URI); default as in infer.",
    )
    backbone: str | None = Field(
        default=None, description="Path or models:/ URI of the RM backbone; default the policy."
    )
    models: list[Literal["orm", "prm"]] = Field(
        default=["orm", "prm"], description="Which reward models to refresh."
    )
    source_weights: dict[str, Weight] = Field(
        default={"explicit": 2.0, "rating": 1.0, "verifier": 1.0},
        description="Resampling weight per pair source (explicit / rating / verifier), each "
        "finite and in [0, 100].",
    )
    step_weights: dict[str, Weight] = Field(
        default={"reviewer": 3.0, "monte_carlo": 1.0},
        description="Resampling weight per PRM step source (reviewer / monte_carlo): a "
        "person's label counts above a Monte-Carlo estimate; each finite and in [0, 100].",
    )
    margin_per_point: float = Field(
        default=0.5, ge=0, le=10, description="Bradley-Terry margin per rating point of gap."
    )
    verifier_pairs_per_case: int = Field(
        default=4, ge=0, le=64, description="Most correct-vs-incorrect pairs per case."
    )
    use_reference: bool = Field(
        default=True, description="Use the reference solution when no rollout was correct."
    )
    mc_rollouts: int = Field(default=4, ge=0, le=64, description="K completions per step prefix.")
    mc_paths_per_case: int = Field(
        default=2, ge=0, le=64, description="Tree paths labelled per case."
    )
    mc_max_tokens: int = Field(
        default=256, ge=8, le=32_768, description="Token cap per MC completion."
    )
    td_lambda: float = Field(default=0.8, ge=0, le=1, description="TD(lambda); 1 = pure MC.")
    train: RMTrainConfig = Field(default_factory=RMTrainConfig, description="Training knobs.")
    promote_margin: float = Field(
        default=0.01, ge=0, le=1, description="Held-out gain over the champion needed to promote."
    )
    family_tolerance: float = Field(
        default=0.05, ge=0, le=1, description="Largest per-family drop allowed when promoting."
    )
    floor: float = Field(
        default=0.55, ge=0, le=1, description="Metric a first model (no champion) must reach."
    )
    max_model_len: int = Field(
        default=4096, ge=256, le=131_072, description="Policy engine context."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Policy engine weight dtype."
    )

    @field_validator("source_weights", "step_weights")
    @classmethod
    def _known_sources(cls, value: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        known = rd.PAIR_SOURCES if info.field_name == "source_weights" else rd.STEP_SOURCES
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; use {', '.join(known)}")
        return value


class RMDecision(BaseModel):
    """One reward model's refresh: its challenger version and the gate's decision."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["promoted", "kept_challenger", "skipped"] = Field(description="Gate.")
    reason: str = Field(description="Why, in words.")
    version: str | None = Field(default=None, description="Registered challenger version.")
    replaced: str | None = Field(default=None, description="The champion it replaced.")
    heldout_accuracy: float | None = Field(default=None, description="ORM held-out accuracy.")
    champion_heldout_accuracy: float | None = Field(default=None, description="Champion's.")
    heldout_auroc: float | None = Field(default=None, description="PRM held-out step AUROC.")
    champion_heldout_auroc: float | None = Field(default=None, description="Champion's.")
    train_examples: int = Field(default=0, description="Examples trained on.")
    heldout_examples: int = Field(default=0, description="Examples evaluated on.")
    too_long: int = Field(default=0, description="Examples over max_length (quarantined).")


class RefreshResult(BaseModel):
    """The result of one reward refresh."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["trained", "skipped"] = Field(description="skipped: nothing to learn from.")
    reason: str | None = Field(default=None, description="Why it was skipped.")
    counts: dict[str, int] = Field(default_factory=dict, description="Pairs/steps per source.")
    single_source: str | None = Field(default=None, description="The only pair source, if so.")
    orm: RMDecision | None = Field(default=None, description="The ORM, when refreshed.")
    prm: RMDecision | None = Field(default=None, description="The PRM, when refreshed.")

    def promoted_uris(self, domain: str) -> dict[str, str]:
        """``{"orm": "models:/…/N"}`` for each reward model the gate promoted."""
        return {
            kind: f"models:/{model_name(domain, kind)}/{rm.version}"
            for kind, rm in (("orm", self.orm), ("prm", self.prm))
            if rm is not None and rm.decision == "promoted"
        }


@flow(name="refresh_reward")
def refresh_reward(params: RefreshParams | None = None) -> RefreshResult:
    """Build data, train challengers, evaluate against champions, register and gate."""
    params = params or RefreshParams()
    ctx = StageContext.open(params.domain)
    log, domain = get_run_logger(), ctx.domain
    cases, splits = rw.load_cases(ctx)
    learn_identifiers(params.domain, [c.inputs for c in cases.values()])
    feedback = rw.load_feedback(ctx)
    trees = rw.load_all_trees(ctx)
    if feedback.height == 0 and not trees:
        msg = f"no feedback and no stored predictions for {params.domain}: nothing to learn from"
        log.warning("%s; run `ponder collect` / `ponder infer` first. No model registered.", msg)
        return RefreshResult(status="skipped", reason=msg)
    refs = feedback["trace_id"].to_list() if feedback.height else []
    index = {**rd.tree_completions(trees), **rd.trace_completions(refs)}
    _, _, policy_dir = resolve_model(ctx, model=params.policy)
    backbone = _backbone(params, policy_dir)
    data = _build(params, domain, cases, feedback, trees=trees, index=index, policy_dir=policy_dir)
    _store(ctx, data)
    if not data.pairs and not data.steps:
        msg = "feedback and predictions gave no usable pairs or step targets"
        log.warning("%s (see lake quarantine). No model registered.", msg)
        return RefreshResult(status="skipped", reason=msg, counts=data.counts)
    connect()
    ensure_experiment()
    results = RefreshResult(status="trained", counts=data.counts)
    with tracked_run(f"refresh-reward-{params.domain}"):
        mlflow.log_params({"domain": params.domain, "backbone": str(backbone)})
        mlflow.log_params({f"cfg.{k}": str(v)[:250] for k, v in params.model_dump().items()})
        mlflow.log_metrics({k: float(v) for k, v in data.counts.items()})
        mlflow.set_tags({"ponder.stage": "refresh_reward", "ponder.domain": params.domain})
        results.single_source = warn_single_source(log, data)
        for kind in params.models:
            decision = _refresh_one(
                ctx, kind, params, cases=cases, splits=splits, data=data, backbone=backbone
            )
            setattr(results, kind, RMDecision(**decision))
    table_artifact(
        domain=params.domain,
        key=f"refresh-reward-{params.domain.replace('_', '-')}",
        table=[{"model": k, **getattr(results, k).model_dump()} for k in params.models],
        description="challenger vs champion on held-out data, and the gate decision",
    )
    return results


def _backbone(params: RefreshParams, policy_dir: Path) -> Path:
    from models.loading import resolve_model_dir

    return resolve_model_dir(ModelSpec(model=params.backbone)) if params.backbone else policy_dir


def _build(
    params: RefreshParams,
    domain: Domain,
    cases: dict,
    feedback: Any,
    *,
    trees: dict,
    index: dict,
    policy_dir: Path,
) -> rw.RewardData:
    inputs = rw.RewardInputs(domain, cases, feedback, trees, index)
    pairs = rw.build_pairs(
        inputs,
        margin_per_point=params.margin_per_point,
        per_case=params.verifier_pairs_per_case,
        use_reference=params.use_reference,
    )
    need_mc = "prm" in params.models and params.mc_rollouts > 0 and trees
    spec = ModelSpec(model=str(policy_dir), max_model_len=params.max_model_len, dtype=params.dtype)
    # an engine started here is shut down before training (memory back); one that was
    # already running (shared by the caller) is left alone
    with scoped_generators():
        generator = get_generator(spec) if need_mc else None
        sampling = SamplingConfig(
            n=params.mc_rollouts or 1, temperature=0.8, max_tokens=params.mc_max_tokens
        )
        champion = rw.champion_dir(model_name(params.domain, "prm"))
        steps = rw.build_steps(
            inputs,
            generator=generator,
            sampling=sampling,
            rollouts=params.mc_rollouts,
            paths_per_case=params.mc_paths_per_case,
            lam=params.td_lambda,
            value_model=ProcessRM(champion) if champion and need_mc else None,
        )
    return rw.RewardData(
        pairs=pairs.pairs,
        steps=steps.steps,
        rejected=pairs.rejected + steps.rejected,
        counts={**pairs.counts, **steps.counts, "rejected": len(pairs.rejected + steps.rejected)},
    )


def _store(ctx: StageContext, data: rw.RewardData) -> None:
    """The training data as lake versions (provenance), rejects to quarantine."""
    lake, domain = ctx.lake, ctx.name
    if data.pairs:
        lake.write_version(domain, "pairs", rw.pairs_frame(data.pairs), ["refresh_reward"])
    if data.steps:
        lake.write_version(domain, "steps", rw.steps_frame(data.steps), ["refresh_reward"])
    lake.quarantine(domain, "pairs", rw.rejected_frame(data.rejected), ctx.run_id)


def warn_single_source(log: Any, data: rw.RewardData) -> str | None:
    """The only pair source when there is just one (warned and tagged), else None."""
    sources = {p["source"] for p in data.pairs}
    if len(sources) != 1:
        return None
    (only,) = sources
    log.warning(
        "every preference pair comes from one source (%s): the ORM learns only what that "
        "source rewards; add reviewer preferences or ratings to broaden it",
        only,
    )
    if mlflow.active_run():
        mlflow.set_tags({"ponder.pairs.single_source": only})
    return only


def _refresh_one(
    ctx: StageContext,
    kind: str,
    params: RefreshParams,
    *,
    cases: dict,
    splits: dict,
    data: rw.RewardData,
    backbone: Path,
) -> dict[str, Any]:
    """Train, evaluate against the champion, register the challenger, gate it."""
    rows, long = _encoded(ctx, kind, params, cases=cases, data=data, backbone=backbone)
    domain = ctx.domain
    train, held = rw.heldout(rows, splits)
    # source weights shape training only; held-out examples count once each
    weights = params.source_weights if kind == "orm" else params.step_weights
    train = rd.weighted(train, weights, params.train.seed)
    if not train:
        return {
            "decision": "skipped",
            "reason": f"no {kind} training examples",
            "too_long": len(long),
        }
    name = model_name(params.domain, kind)
    with tempfile.TemporaryDirectory(prefix=f"ponder-{kind}-") as tmp:
        trainer = train_orm if kind == "orm" else train_prm
        model_dir, history = trainer(train, backbone, Path(tmp), params.train)
        _log_history(kind, history)
        new = _evaluate(kind, model_dir, domain, cases, held)
        champion = rw.champion_dir(name)
        old = _evaluate(kind, champion, domain, cases, held) if champion else None
        version = register_hf_dir(
            model_dir,
            name,
            alias="challenger",
            task="text-classification" if kind == "orm" else "token-classification",
            tags={"ponder.backbone": str(backbone), "ponder.train_examples": str(len(train))},
        )
    return _decide(
        kind,
        name,
        str(version.version),
        params,
        new=new,
        old=old,
        n_train=len(train),
        n_held=len(held),
        n_long=len(long),
    )


def _encoded(
    ctx: StageContext,
    kind: str,
    params: RefreshParams,
    *,
    cases: dict,
    data: rw.RewardData,
    backbone: Path,
) -> tuple[list, list]:
    """Token rows for one RM; examples over max_length are quarantined, not trained on."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    encode = rw.tokenize_pairs if kind == "orm" else rw.tokenize_steps
    examples = data.pairs if kind == "orm" else data.steps
    rows, long = encode(tok, ctx.domain, cases, examples, params.train.max_length)
    mlflow.log_metric(f"{kind}_too_long", len(long))
    dataset = "pairs" if kind == "orm" else "steps"
    ctx.lake.quarantine(ctx.name, dataset, rw.rejected_frame(long), f"{ctx.run_id}-{kind}-too-long")
    if long:
        get_run_logger().warning(
            "%d %s examples exceed max_length %d (quarantined, not trained on)",
            len(long),
            kind,
            params.train.max_length,
        )
    return rows, long


def _evaluate(kind: str, model_dir: Path, domain: Domain, cases: dict, held: list) -> dict:
    if not held:
        return {"metric": None, "by_family": {}}
    if kind == "orm":
        m = rw.orm_metrics(model_dir, domain, cases, held)
        return {**m, "metric": m["accuracy"]}
    m = rw.prm_metrics(model_dir, domain, cases, held)
    return {**m, "metric": m["auroc"]}


def _decide(
    kind: str,
    name: str,
    version: str,
    params: RefreshParams,
    *,
    new: dict,
    old: dict | None,
    n_train: int,
    n_held: int,
    n_long: int,
) -> dict[str, Any]:
    ok, reason = rw.gate(
        new["metric"],
        old["metric"] if old else None,
        (new["by_family"], old["by_family"] if old else {}),
        params.promote_margin,
        tolerance=params.family_tolerance,
        floor=params.floor,
    )
    metric = "heldout_accuracy" if kind == "orm" else "heldout_auroc"
    summary = {
        metric: new["metric"],
        f"champion_{metric}": old["metric"] if old else None,
        "by_family": new["by_family"],
        "train_examples": n_train,
        "heldout_examples": n_held,
        "too_long": n_long,
    }
    previous = rw.record_decision(name, version, ok, reason, summary)
    if ok:
        announce(REWARD_PROMOTED, params.domain, kind=kind, uri=f"models:/{name}/{version}")
    _log_eval(kind, metric, new, old)
    get_run_logger().info(
        "%s v%s: %s (%s)", name, version, "PROMOTED" if ok else "kept as challenger", reason
    )
    return {
        "version": version,
        "decision": "promoted" if ok else "kept_challenger",
        "reason": reason,
        "replaced": previous,
        **{k: v for k, v in summary.items() if k != "by_family"},
    }


def _log_history(kind: str, history: list[dict[str, float]]) -> None:
    for rec in history:
        if "loss" in rec:
            mlflow.log_metric(f"{kind}_train_loss", rec["loss"], step=int(rec.get("step", 0)))


def _log_eval(kind: str, metric: str, new: dict, old: dict | None) -> None:
    if new["metric"] is not None:
        mlflow.log_metric(f"{kind}_{metric}", new["metric"])
    if old and old["metric"] is not None:
        mlflow.log_metric(f"{kind}_champion_{metric}", old["metric"])
    for fam, v in new["by_family"].items():
        if v is not None:
            mlflow.log_metric(f"{kind}_{metric}_{fam}", v)
    if new["metric"] is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        plot = rw.plot_orm if kind == "orm" else rw.plot_prm
        name = "score_histogram.png" if kind == "orm" else "calibration.png"
        mlflow.log_artifact(str(plot(new, Path(tmp) / f"{kind}_{name}")), artifact_path="plots")

"""Flow ``finetune``: SFT warm start + GRPO on a domain's train split, versioned in MLflow.

Resolves the base policy and the reward models once, picks the curriculum (difficulty levels
in the pass-rate band, zero-variance groups left out), runs SFT then GRPO with the domain's
reward parts plus the learned ORM (and PRM when configured), and registers the merged result
as ``ponder-<domain>-policy@challenger`` with its lineage in tags. Work lives in a folder
keyed by the run's inputs: a rerun with ``resume=True`` continues from the latest GRPO
checkpoint inside the same MLflow run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import mlflow
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    update_progress_artifact,
)
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from domains.base import DomainName
from domains.calc import ToolNames
from domains.errors import PonderError
from models.engine import get_generator, release_generator
from models.isolation import run_job
from models.loading import ModelSpec
from models.policy import (
    PolicyTrainConfig,
    RewardSpec,
    check_causal_lm,
    grpo_job,
    train_sft,
)
from models.redaction import learn as learn_identifiers
from models.redaction import redacted_copy
from models.registry import connect, ensure_experiment, model_name, register_hf_dir
from models.runs import tracked_run
from models.tools import with_tools
from tasks import finetune as ft
from tasks.artifacts import markdown_artifact
from tasks.context import StageContext
from tasks.events import POLICY_CHALLENGER, announce
from tasks.infer import resolve_model

Share = Annotated[float, Field(ge=0.0, le=1.0)]  # a pass rate


def _band(band: tuple[float, float]) -> tuple[float, float]:
    if band[0] >= band[1]:
        raise ValueError(f"curriculum_band {band}: low must be below high, e.g. (0.2, 0.8)")
    return band


class FinetuneParams(BaseModel):
    """Parameters of one fine-tuning run (a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    domain: DomainName = Field(default="medicine", description="Registered domain name.")
    dataset_version: str | None = Field(default=None, description="cases version; None = latest.")
    family: str | None = Field(default=None, description="Train on one family only.")
    difficulties: list[int] | None = Field(
        default=None, description="Candidate difficulty levels; None = all (curriculum picks)."
    )
    base_model: str | None = Field(
        default=None,
        description="Path or models:/ URI; default the domain policy champion, else "
        "ponder-base-policy@champion.",
    )
    orm: str | None = Field(
        default="champion",
        description="ORM for the learned reward: 'champion' (if one exists), a models:/ URI "
        "or path, or None for no learned reward.",
    )
    prm: str | None = Field(
        default=None,
        description="PRM for a learned step reward: 'champion' (if one exists), a models:/ URI "
        "or path, or None (the default) for none.",
    )
    prm_aggregate: Literal["min", "last", "prod"] = Field(
        default="min", description="How the PRM's step values become one reward per completion."
    )
    reward_weights: dict[str, float] | None = Field(
        default=None,
        description="Weight per reward part; None = the domain config (+0.5 per learned RM).",
    )
    train: PolicyTrainConfig = Field(default_factory=PolicyTrainConfig, description="TRL knobs.")
    curriculum: bool = Field(
        default=True, description="Pick levels by pass rate and drop zero-variance groups."
    )
    curriculum_samples: int = Field(default=4, ge=2, le=64, description="Samples per prompt (K).")
    curriculum_band: Annotated[tuple[Share, Share], AfterValidator(_band)] = Field(
        default=(0.1, 0.9),
        description="Pass-rate band a difficulty level must lie in: (low, high), 0 <= low < "
        "high <= 1.",
    )
    max_rows: int = Field(default=256, ge=1, le=10_000_000, description="Most prompts considered.")
    resume: bool = Field(default=True, description="Continue from the latest checkpoint.")
    max_model_len: int = Field(
        default=4096, ge=256, le=131_072, description="Engine context length."
    )
    tools: ToolNames = None


class FinetuneResult(BaseModel):
    """The result of one fine-tuning run: the registered challenger."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(description="Registered version of ponder-<domain>-policy.")
    base: str = Field(description="The base model it was tuned from.")
    dataset: str = Field(description="cases version trained on.")
    rows: int = Field(description="Prompts trained on (after the curriculum).")
    steps: int = Field(description="GRPO optimizer steps taken.")
    curriculum: dict[str, Any] = Field(description="Pass rates and the levels kept.")
    work_dir: str = Field(description="Checkpoints (resume from here).")
    run_id: str = Field(description="The MLflow run.")


@flow(name="finetune")
def finetune(params: FinetuneParams | None = None) -> FinetuneResult:
    """Curriculum, SFT, GRPO, register the challenger; resumable."""
    params = params or FinetuneParams()
    ctx = StageContext.open(params.domain)
    connect()  # fail fast (with retries) before any training if MLflow is unreachable
    domain = ctx.domain
    tools = domain.active_tools(params.tools)
    rows, version = _rows(params, ctx, tools)
    uri, base_version, base = resolve_model(ctx, model=params.base_model)
    check_causal_lm(base)
    paths, learned = _learned(ctx, params)
    rewards = ft.reward_setup(domain, paths, params.reward_weights, params.prm_aggregate)
    key = ft.config_hash(
        {"p": params.model_dump(exclude={"resume"}), "data": version, "base": base_version}
    )
    work = _work_dir(Path(ctx.settings.home, "runs", "finetune", key), fresh=not params.resume)
    rows, report = _curriculum(params, rows, base, domain, rewards=rewards, tools=tools)
    ctx = {"version": version, "base": base_version, "key": key, "learned": learned,
           "report": report}  # fmt: skip
    registered, history, run_id = _train_and_register(
        params, rows, base, work, rewards=rewards, tools=tools, ctx=ctx
    )
    uri = f"models:/{model_name(params.domain, 'policy')}/{registered.version}"
    announce(POLICY_CHALLENGER, params.domain, uri=uri, version=str(registered.version))
    steps = max((h.get("step", 0) for h in history), default=0)
    summary = {"version": str(registered.version), "base": base_version, "dataset": version,
               "rows": len(rows), "steps": steps, "curriculum": report, "work_dir": str(work),
               "run_id": run_id}  # fmt: skip
    markdown_artifact(
        domain=params.domain,
        key=f"finetune-{params.domain.replace('_', '-')}",
        markdown=_markdown(summary, rewards.weights),
    )
    return FinetuneResult(**summary)


def _train_and_register(
    params: FinetuneParams,
    rows: list[dict],
    base: Path,
    work: Path,
    *,
    rewards: Any,
    tools: list[str],
    ctx: dict[str, Any],
) -> tuple[Any, list[dict[str, Any]], str]:
    """Train inside one MLflow run (reopened on resume) and register the challenger."""
    version, base_version, key = ctx["version"], ctx["base"], ctx["key"]
    learned, report = ctx["learned"], ctx["report"]
    ensure_experiment()
    with tracked_run(f"finetune-{params.domain}", run_id=_run_id(work)) as run:
        (work / "mlflow_run_id").write_text(run.info.run_id)
        mlflow.log_params(
            {
                "dataset": version,
                "base": base_version,
                "config_hash": key,
                **_run_params(params, learned),
            }
        )
        mlflow.log_dict(report, "curriculum.json")
        mlflow.log_metric("zero_variance_groups", report["zero_variance_groups"])
        final, history = _train(
            params,
            rows,
            base,
            work,
            rewards=rewards,
            run_id=run.info.run_id,
            tools=tools,
        )
        _log_outputs(work, history, rewards.names, params.domain)
        tags = {"ponder.dataset": f"{params.domain}/cases@{version}", "ponder.base": base_version,
                "ponder.config_hash": key, "ponder.rewards": ",".join(rewards.names)}  # fmt: skip
        tags |= {f"ponder.{kind}": ref or "none" for kind, ref in learned.items()}
        registered = register_hf_dir(
            final, model_name(params.domain, "policy"), alias="challenger", tags=tags
        )
    return registered, history, run.info.run_id


def _rows(params: FinetuneParams, ctx: StageContext, tools: list[str]) -> tuple[list[dict], str]:
    """The train rows of the cases version (identifiers learned), refused when empty."""
    rows, version = ft.training_rows(
        ctx,
        version=params.dataset_version,
        family=params.family,
        difficulties=params.difficulties,
        tools=tools,
    )
    learn_identifiers(params.domain, [r["prompt"] for r in rows])
    if not rows:
        raise PonderError(
            "dataset",
            f"{params.domain}/cases@{version} has no train rows"
            + (f" for family {params.family}" if params.family else ""),
            "collect cases (train split) or widen family/difficulties",
        )
    return rows, version


def _work_dir(work: Path, *, fresh: bool) -> Path:
    """The run's checkpoint folder, emptied first when not resuming."""
    if fresh and work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    return work


def _run_params(params: FinetuneParams, learned: dict[str, str | None]) -> dict[str, Any]:
    return {
        "domain": params.domain,
        "orm": learned["orm"] or "none",
        "prm": learned["prm"] or "none",
        **{f"train.{k}": v for k, v in params.train.model_dump().items()},
    }


def _curriculum(
    params: FinetuneParams,
    rows: list,
    base: Path,
    domain: Any,
    *,
    rewards: RewardSpec,
    tools: list[str],
) -> tuple[list, dict[str, Any]]:
    rows = rows[: params.max_rows]
    if not params.curriculum:
        return rows, {
            "levels": sorted({r["difficulty"] for r in rows}),
            "skipped": True,
            "pass_rate_by_difficulty": {},
            "zero_variance_groups": 0,
            "rows": len(rows),
        }
    spec = ModelSpec(model=str(base), max_model_len=params.max_model_len)
    kept, report = ft.curriculum(
        rows,
        with_tools(get_generator(spec), tools),
        domain,
        rewards.build(),
        weights=rewards.weight_values,
        samples=params.curriculum_samples,
        max_tokens=params.train.max_completion_length,
        band=params.curriculum_band,
    )
    release_generator(spec)  # free the engine's memory before training
    get_run_logger().info("curriculum: %s", report)
    if not kept:
        raise PonderError(
            "dataset",
            "the curriculum left no rows (every group had zero reward variance)",
            "add cases, raise curriculum_samples, or set curriculum=False",
        )
    return kept, report


def _learned(
    ctx: StageContext, params: FinetuneParams
) -> tuple[dict[str, str], dict[str, str | None]]:
    """Local directories of the learned reward models configured (ORM, PRM), and their
    version labels (None when not used)."""
    paths: dict[str, str] = {}
    versions: dict[str, str | None] = {"orm": None, "prm": None}
    for kind, ref in (("orm", params.orm), ("prm", params.prm)):
        found = _reward_model(ctx, kind, ref)
        if found is not None:
            versions[kind], path = found
            paths[kind] = str(path)
    return paths, versions


def _reward_model(ctx: StageContext, kind: str, ref: str | None) -> tuple[str, Path] | None:
    """``(exact version, local path)`` of a reward model reference; None when not set, or
    when 'champion' is asked for and there is none yet."""
    if ref is None:
        return None
    if ref == "champion":
        try:
            champion = f"models:/{model_name(ctx.name, kind)}@champion"
            _, exact, path = resolve_model(ctx, model=champion)
        except PonderError:
            return None
        return exact, path
    _, exact, path = resolve_model(ctx, model=ref)
    return exact, path


def _run_id(work: Path) -> str | None:
    marker = work / "mlflow_run_id"
    return marker.read_text().strip() if marker.is_file() else None


def _train(
    params: FinetuneParams,
    rows: list,
    base: Path,
    work: Path,
    *,
    rewards: RewardSpec,
    run_id: str,
    tools: list[str],
) -> tuple[Path, list[dict[str, Any]]]:
    """SFT (unless already done) then GRPO; in a fresh subprocess when ``train.isolate``
    is on (the default on GPU), in this process otherwise."""
    cfg, start, isolate = params.train, base, params.train.isolate_on()
    env = {"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(), "MLFLOW_RUN_ID": run_id}
    if cfg.sft:
        start = _sft_done(work) or run_job(
            train_sft, rows, base, work, cfg, isolate=isolate, env=env
        )
    progress = create_progress_artifact(progress=0.0, description="GRPO steps")
    step_file = work / "progress"

    def report() -> None:
        if step_file.is_file():
            done = int(step_file.read_text() or 0)
            update_progress_artifact(progress, progress=100.0 * done / cfg.grpo_max_steps)

    return run_job(
        grpo_job,
        rows,
        start,
        work,
        rewards,
        cfg=cfg,
        progress_file=step_file,
        tools=tools,
        isolate=isolate,
        env=env,
        on_wait=report,
    )


def _sft_done(work: Path) -> Path | None:
    done = work / "sft"
    return done if (done / "config.json").is_file() else None


def _log_outputs(work: Path, history: list[dict[str, Any]], names: list[str], domain: str) -> None:
    """Reward curves (PNG) and the completion parquet files TRL wrote (identifiers masked:
    the prompts hold the case text)."""
    with tempfile.TemporaryDirectory() as tmp:
        png = ft.reward_curves(history, names, Path(tmp) / "reward_curves.png")
        mlflow.log_artifact(str(png), artifact_path="plots")
    completions = work / "grpo-checkpoints" / "completions"
    if completions.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            masked = redacted_copy(completions, Path(tmp) / "completions", domain)
            mlflow.log_artifacts(str(masked), artifact_path="completions")


def _markdown(summary: dict[str, Any], weights: dict[str, float]) -> str:
    parts = ", ".join(f"{n} x{w:g}" for n, w in weights.items())
    cur = summary["curriculum"]
    return (
        f"# finetune: ponder policy v{summary['version']} (challenger)\n\n"
        f"- base: `{summary['base']}`; data: cases@{summary['dataset']} ({summary['rows']} rows)\n"
        f"- GRPO steps: {summary['steps']}; rewards: {parts}\n"
        f"- curriculum levels {cur['levels']} (pass rates {cur['pass_rate_by_difficulty']}); "
        f"zero-variance groups left out: {cur['zero_variance_groups']}\n"
    )

"""Policy training with TRL: an SFT warm start on reference solutions, then GRPO.

Both stages take plain rows and a model directory and return a merged, safetensors model
directory, so the flow passes paths only. GRPO's reward functions follow TRL's contract
(``f(prompts, completions, **columns) -> list[float | None]``); the domain's parts read the
``case`` column, and ``orm_reward`` wraps a learned outcome reward model the same way.
Hardware is chosen automatically (GPU: bf16, LoRA, vLLM colocate rollouts; CPU: fp32 and
``generate``) and every choice can be overridden in ``PolicyTrainConfig``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domains.errors import PonderError
from domains.faults import failpoint
from models import progress
from models.chat import safe_messages
from models.reward import device_args, save_merged, sigmoid, use_gpu


class PolicyTrainConfig(BaseModel):
    """The TRL knobs ponder exposes; validated at construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sft: bool = Field(default=True, description="Run the SFT warm start before GRPO.")
    sft_epochs: float = Field(default=1.0, gt=0, le=50, description="SFT passes over the data.")
    sft_max_steps: int = Field(
        default=-1, ge=-1, le=1_000_000, description="Stop SFT after N steps (-1: epochs)."
    )
    sft_learning_rate: float = Field(default=5e-5, gt=0, le=1, description="SFT AdamW rate.")
    grpo_max_steps: int = Field(default=50, ge=1, le=1_000_000, description="GRPO optimizer steps.")
    learning_rate: float = Field(default=1e-5, gt=0, le=1, description="GRPO AdamW rate.")
    num_generations: int = Field(
        default=4, ge=2, le=256, description="Completions per prompt (group)."
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        le=4096,
        description="Completions per device per step (prompts x generations).",
    )
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=1024, description="Steps per update."
    )
    max_completion_length: int = Field(
        default=256, ge=8, le=32_768, description="Tokens per completion."
    )
    max_length: int = Field(
        default=2048, ge=64, le=131_072, description="SFT token cap per example."
    )
    temperature: float = Field(default=1.0, gt=0, le=2, description="Rollout temperature.")
    beta: float = Field(
        default=0.0, ge=0, le=10, description="KL coefficient (0: no reference model)."
    )
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field(
        default="dapo",
        description="TRL's GRPO loss normalisation; 'dr_grpo' is Dr. GRPO's unbiased loss.",
    )
    save_steps: int = Field(
        default=10, ge=1, le=1_000_000, description="Checkpoint every K GRPO steps."
    )
    lora: bool | None = Field(default=None, description="LoRA adapters; None = on GPU only.")
    lora_rank: int = Field(default=16, ge=1, le=256, description="LoRA rank when LoRA is on.")
    use_vllm: bool | None = Field(
        default=None, description="vLLM colocate rollouts; None = on GPU only."
    )
    isolate: bool | None = Field(
        default=None,
        description="Train in a fresh subprocess, so CUDA and vLLM memory is freed when it "
        "ends; None = on GPU only.",
    )
    seed: int = Field(
        ge=0, le=2**32 - 1, default=0, description="Seed for data order, heads and sampling."
    )

    @model_validator(mode="after")
    def _groups_fit(self) -> PolicyTrainConfig:
        per_step = self.batch_size * self.gradient_accumulation_steps
        if per_step % self.num_generations:
            fit = (per_step // self.num_generations + 1) * self.num_generations
            raise ValueError(
                f"batch_size ({self.batch_size}) x gradient_accumulation_steps "
                f"({self.gradient_accumulation_steps}) = {per_step} completions per step is not "
                f"divisible by num_generations ({self.num_generations}): every prompt needs "
                f"its whole group. Use batch_size {fit} or a num_generations that divides "
                f"{per_step}"
            )
        return self

    def lora_on(self) -> bool:
        return self.lora if self.lora is not None else use_gpu()

    def vllm_on(self) -> bool:
        return self.use_vllm if self.use_vllm is not None else use_gpu()

    def isolate_on(self) -> bool:
        return self.isolate if self.isolate is not None else use_gpu()


class RewardSpec(BaseModel):
    """GRPO's reward functions as plain data, so a training subprocess can rebuild them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(description="Domain whose reward parts are used (by name).")
    weights: dict[str, float] = Field(
        description="Weight per reward function, in order: domain parts, then orm/prm."
    )
    orm: str | None = Field(default=None, description="Local ORM directory for part 'orm'.")
    prm: str | None = Field(default=None, description="Local PRM directory for part 'prm'.")
    prm_aggregate: Literal["min", "last", "prod"] = Field(
        default="min", description="How PRM step values become one reward per completion."
    )

    @property
    def names(self) -> list[str]:
        return list(self.weights)

    @property
    def weight_values(self) -> list[float]:
        """The weights in reward-function order (what TRL's ``reward_weights`` takes)."""
        return list(self.weights.values())

    def build(self) -> list[Callable[..., list[float | None]]]:
        """The reward functions, one per name (learned models are loaded here, once per
        process for the same spec: the curriculum and GRPO share them)."""
        return list(_built(self.model_dump_json()))

    def _build(self) -> tuple[Callable[..., list[float | None]], ...]:
        from domains.base import get_domain

        parts = get_domain(self.domain).reward_parts
        return tuple(self._one(name, parts) for name in self.names)

    def _one(self, name: str, parts: dict) -> Callable[..., list[float | None]]:
        if name == "orm" and self.orm:
            from models.reward import OutcomeRM

            return orm_reward(OutcomeRM(Path(self.orm), name="orm"))
        if name == "prm" and self.prm:
            from models.prm import ProcessRM

            return prm_reward(ProcessRM(Path(self.prm), name="prm"), self.prm_aggregate)
        if name in parts:
            return parts[name]
        raise PonderError(
            "reward_weights",
            f"{name!r} is not a reward part of {self.domain} nor a configured learned model",
            f"use {sorted(parts)} plus 'orm'/'prm' with their model paths",
        )


def check_causal_lm(path: Path) -> None:
    """Refuse a base model that is not a causal LM (e.g. a reward model's classifier)."""
    from transformers import AutoConfig

    archs = AutoConfig.from_pretrained(path).architectures or []
    if not any(a.endswith("ForCausalLM") for a in archs):
        raise PonderError(
            "base_model",
            f"{path} is {archs or 'an unknown architecture'}, not a causal LM",
            "pass a policy (…ForCausalLM) such as models:/ponder-base-policy@champion",
        )


def _peft(cfg: PolicyTrainConfig) -> Any:
    if not cfg.lora_on():
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=2 * cfg.lora_rank,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def sft_rows(tokenizer: Any, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompt/completion rows for TRL, with case text and references defused (``models.chat``)."""
    return [
        {
            "prompt": safe_messages(tokenizer, r["prompt"]),
            "completion": safe_messages(
                tokenizer, [{"role": "assistant", "content": r["reference"]}]
            ),
        }
        for r in rows
    ]


def train_sft(
    rows: Sequence[dict[str, Any]], base: Path, out_dir: Path, cfg: PolicyTrainConfig
) -> Path:
    """SFT on ``prompt`` (chat messages) -> ``completion`` (reference text); loss on the
    completion only. Returns the merged model directory."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if not rows:
        raise PonderError("dataset", "no SFT rows", "use a dataset version with train cases")
    tokenizer = AutoTokenizer.from_pretrained(base)
    data = Dataset.from_list(sft_rows(tokenizer, rows))
    args = SFTConfig(
        output_dir=str(out_dir / "sft-checkpoints"),
        num_train_epochs=cfg.sft_epochs,
        max_steps=cfg.sft_max_steps,
        learning_rate=cfg.sft_learning_rate,
        per_device_train_batch_size=max(1, cfg.batch_size // cfg.num_generations),
        max_length=cfg.max_length,
        completion_only_loss=True,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        **device_args(cfg.seed),
    )
    trainer = SFTTrainer(
        model=str(base),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=_peft(cfg),
        callbacks=[progress.trainer_callback("SFT steps")],
    )
    trainer.train()
    return save_merged(trainer.model, tokenizer, out_dir / "sft")


def orm_reward(model: Any) -> Callable[..., list[float | None]]:
    """A learned outcome reward model as a TRL reward function (named ``orm``): sigmoid of
    its logit, every completion of the batch in one batched pass."""
    from domains.rewards import completion_text

    def orm(prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        seqs = [
            model.encode(list(p), completion_text(c))
            for p, c in zip(prompts, completions, strict=True)
        ]
        return [sigmoid(s) for s in model.raw_scores(seqs)]

    return orm


def prm_reward(model: Any, how: str = "min") -> Callable[..., list[float | None]]:
    """A learned process reward model as a TRL reward function (named ``prm``): the step
    values of each completion (cut at step boundaries, as search scores them) aggregated
    with ``how`` (min, last or prod), in one batched pass."""
    from domains.rewards import completion_text
    from models.reward import split_steps
    from models.search.tree import aggregate

    aggregate([1.0], how)  # an unknown aggregation fails here, before any training

    def prm(prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        rows = [
            model.encode(list(p), split_steps(completion_text(c)) or [""])
            for p, c in zip(prompts, completions, strict=True)
        ]
        return [aggregate(v, how) for v in model.values(rows)]

    return prm


def latest_checkpoint(folder: Path) -> Path | None:
    """The highest ``checkpoint-N`` under ``folder`` that has trainer state, if any."""
    found = [
        p
        for p in folder.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def train_grpo(
    rows: Sequence[dict[str, Any]],
    model_dir: Path,
    out_dir: Path,
    reward_funcs: Sequence[Callable[..., list[float | None]]],
    *,
    weights: Sequence[float],
    cfg: PolicyTrainConfig,
    callbacks: Sequence[Any] = (),
    report_to: Sequence[str] = ("mlflow",),
    tools: Sequence[str] = (),
) -> tuple[Path, list[dict[str, Any]]]:
    """GRPO over rows with ``prompt`` (messages) and ``case`` (JSON). Checkpoints every
    ``save_steps``; when ``out_dir`` already has one, training resumes from it. With
    ``report_to=("mlflow",)`` call it inside an active MLflow run: TRL logs into that run.
    With ``tools`` (["calc"]) rollouts execute calculator calls as inference does
    (``models.rollout``); inserted results are masked out of the loss."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    if not rows:
        raise PonderError("dataset", "no GRPO rows", "use a dataset version with train cases")
    if len(weights) != len(reward_funcs):
        raise PonderError(
            "reward_weights",
            f"{len(weights)} weights for {len(reward_funcs)} reward functions",
            "give exactly one weight per reward part",
        )
    ckpt_dir = out_dir / "grpo-checkpoints"
    args = _grpo_args(cfg, ckpt_dir, weights=weights, report_to=report_to)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sample = ckpt_dir / "completions" / "sample.jsonl"
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=[_sampled(reward_funcs[0], sample), *reward_funcs[1:]],
        args=args,
        train_dataset=Dataset.from_list(
            [{"prompt": safe_messages(tokenizer, r["prompt"]), "case": r["case"]} for r in rows]
        ),
        processing_class=tokenizer,
        peft_config=_peft(cfg),
        callbacks=[*callbacks, _failpoint_on_save(), progress.trainer_callback("GRPO steps")],
        rollout_func=_rollout(tools, cfg),
    )
    resume = latest_checkpoint(ckpt_dir)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return save_merged(trainer.model, tokenizer, out_dir / "grpo"), trainer.state.log_history


def _grpo_args(
    cfg: PolicyTrainConfig, ckpt_dir: Path, *, weights: Sequence[float], report_to: Sequence[str]
) -> Any:
    """TRL's GRPOConfig from ponder's knobs (bf16 and vLLM colocated on GPU)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(ckpt_dir),
        max_steps=cfg.grpo_max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        reward_weights=list(weights),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        logging_steps=1,
        report_to=list(report_to),
        # TRL's own completion log prints raw prompts (case text) to the console; a small
        # sample is written to completions/ instead, which is uploaded redacted.
        log_completions=False,
        gradient_checkpointing=False,
        use_vllm=cfg.vllm_on(),
        vllm_mode="colocate",
        **device_args(cfg.seed),
    )


def _rollout(tools: Sequence[str], cfg: PolicyTrainConfig) -> Any:
    """The calculator-executing rollout function when "calc" is on, else TRL's own."""
    if "calc" not in tools:
        return None
    import os

    from models.rollout import make_rollout

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental
    return make_rollout(cfg.max_completion_length, cfg.temperature)


@functools.lru_cache(maxsize=1)
def _built(spec: str) -> tuple[Callable[..., list[float | None]], ...]:
    return RewardSpec.model_validate_json(spec)._build()


def grpo_job(
    rows: Sequence[dict[str, Any]],
    model_dir: Path,
    out_dir: Path,
    rewards: RewardSpec,
    *,
    cfg: PolicyTrainConfig,
    report_to: Sequence[str] = ("mlflow",),
    progress_file: Path | None = None,
    tools: Sequence[str] = (),
) -> tuple[Path, list[dict[str, Any]]]:
    """``train_grpo`` from plain data (picklable: runs in ``run_isolated``). With
    ``progress_file`` the global step is written there after every step, for the parent
    process to report."""
    callbacks = [_file_progress(progress_file)] if progress_file else []
    return train_grpo(
        rows,
        model_dir,
        out_dir,
        rewards.build(),
        weights=rewards.weight_values,
        cfg=cfg,
        callbacks=callbacks,
        report_to=report_to,
        tools=tools,
    )


def _sampled(fn: Callable[..., list[float | None]], path: Path, k: int = 2) -> Any:
    """``fn`` that also appends ``k`` (prompt, completion, reward) rows per call to ``path``
    (local; uploads go through ``redacted_copy``)."""

    def sampled(prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        out = fn(prompts=prompts, completions=completions, **kwargs)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            for p, c, r in list(zip(prompts, completions, out, strict=True))[:k]:
                fh.write(json.dumps({"prompt": p, "completion": c, "reward": r}, default=str))
                fh.write("\n")
        return out

    sampled.__name__ = getattr(fn, "__name__", "reward")
    return sampled


def _file_progress(path: Path) -> Any:
    from transformers import TrainerCallback

    class FileProgress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            path.write_text(str(state.global_step))

    return FileProgress()


def _failpoint_on_save() -> Any:
    """``finetune.checkpoint`` fires after each checkpoint is on disk (fault tests)."""
    from transformers import TrainerCallback

    class CheckpointFailpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            failpoint("finetune.checkpoint")

    return CheckpointFailpoint()

"""GRPO rollouts that execute calculator calls exactly as inference does.

TRL's built-in ``tools`` expect JSON tool calls through a chat template; ponder's
``<<expr>>`` notation is plain text, so GRPO gets an experimental ``rollout_func`` (TRL
1.16) instead. It generates through the same ``ToolGenerator`` as search and evaluation:
- on CPU over the live policy with transformers ``generate``;
- on GPU over TRL's colocated vLLM engine.

Inserted result tokens come back masked (``env_mask`` = 0), so the policy is never trained
to predict them. Each completion's calls go to the reward functions as the ``calc_calls``
column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domains.calc import LIMITS, CalcLimits
from models.engine import Generator, HFGenerator, SamplingConfig, VLLMGenerator
from models.tools import ToolGenerator

GeneratorFor = Callable[[Any], Generator]


def live_generator(trainer: Any) -> Generator:
    """The policy being trained, as a Generator: TRL's vLLM engine when it runs one, else
    the in-memory model with ``generate`` (weights are current at every step)."""
    vllm = getattr(trainer, "vllm_generation", None)
    if getattr(trainer, "use_vllm", False) and vllm is not None:
        return VLLMGenerator.live(vllm.llm, trainer.processing_class)
    model = trainer.accelerator.unwrap_model(trainer.model)
    return HFGenerator.live(model, trainer.processing_class)


def make_rollout(
    max_tokens: int,
    temperature: float,
    limits: CalcLimits = LIMITS,
    generator_for: GeneratorFor = live_generator,
) -> Callable[[list, Any], dict[str, list]]:
    """A TRL ``rollout_func``: ``(prompts, trainer) -> {prompt_ids, completion_ids,
    logprobs, env_mask, calc_calls}``. TRL's sampler repeats each prompt once per
    generation, so each entry gets one unseeded sample, all in one batch."""

    def rollout(prompts: list, trainer: Any) -> dict[str, list]:
        generator = ToolGenerator(generator_for(trainer), limits)
        sampling = SamplingConfig(
            n=1, temperature=temperature, max_tokens=max_tokens, logprobs=True
        )
        was_training = _eval_mode(generator)
        try:  # one batch for the whole slice: every round resumes all paused sequences
            outs = generator.generate(list(prompts), sampling)
        finally:
            _restore(generator, was_training)
        return _columns(outs)

    return rollout


def _columns(outs: list) -> dict[str, list]:
    cols: dict[str, list] = {
        "prompt_ids": [],
        "completion_ids": [],
        "logprobs": [],
        "env_mask": [],
        "calc_calls": [],
    }
    for out in outs:
        for c in out.completions:
            ids = list(c.token_ids)
            mask = list(c.tool_mask or [1] * len(ids))[: len(ids)]
            if not ids:  # TRL needs one id: repeat the prompt's last, masked out of the loss
                ids, mask = [out.prompt_token_ids[-1]], [0]
            cols["prompt_ids"].append(list(out.prompt_token_ids))
            cols["completion_ids"].append(ids)
            cols["logprobs"].append((list(c.logprobs or []) + [0.0] * len(ids))[: len(ids)])
            cols["env_mask"].append(mask)
            cols["calc_calls"].append([call.model_dump() for call in c.calls])
    return cols


def _eval_mode(generator: ToolGenerator) -> bool:
    model = getattr(generator.inner, "model", None)
    training = bool(getattr(model, "training", False))
    if training:
        model.eval()
    return training


def _restore(generator: ToolGenerator, was_training: bool) -> None:
    if was_training:
        generator.inner.model.train()

"""SFT + GRPO on the tiny model (CPU, generate rollouts): weights move, columns reach the
reward functions, a resumed run continues the step count, bad configs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from domains.base import get_domain
from domains.errors import PonderError
from models.policy import (
    PolicyTrainConfig,
    check_causal_lm,
    latest_checkpoint,
    orm_reward,
    prm_reward,
    train_grpo,
    train_sft,
)

D = get_domain("medicine")
CASES = D.generate(3, 1, difficulty=1)
ROWS = [
    {"prompt": D.prompt(c), "case": c.model_dump_json(), "reference": c.reference} for c in CASES
]
CFG = PolicyTrainConfig(
    sft_max_steps=2,
    grpo_max_steps=2,
    num_generations=2,
    batch_size=2,
    max_completion_length=8,
    max_length=2048,
    save_steps=1,
    learning_rate=1e-3,
)


def test_learned_rewards_batch_like_the_models_score(
    tiny_prm: Path, tiny_reward_model: Path
) -> None:
    from types import SimpleNamespace

    from models.prm import ProcessRM
    from models.reward import OutcomeRM, split_steps

    texts = ["## Step 1: a\n\n## Step 2: bb\n\nAnswer: 1", "Answer: 22", "## Step 1: c"]
    prompts = [r["prompt"] for r in ROWS]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    prm = ProcessRM(tiny_prm)
    values = [
        prm.values([prm.encode(p, split_steps(t))])[0] for p, t in zip(prompts, texts, strict=True)
    ]
    assert [len(v) for v in values] == [3, 1, 1]
    got = prm_reward(prm, "min")(prompts=prompts, completions=completions, case=[])
    assert got == pytest.approx([min(v) for v in values], abs=1e-5)
    last = prm_reward(prm, "last")(prompts=prompts, completions=completions)
    assert last == pytest.approx([v[-1] for v in values], abs=1e-5)
    orm = OutcomeRM(tiny_reward_model)
    one_by_one = [
        orm.score_outcomes(SimpleNamespace(prompt=p), [t], [[]])[0]
        for p, t in zip(prompts, texts, strict=True)
    ]
    assert orm_reward(orm)(prompts=prompts, completions=completions) == pytest.approx(
        one_by_one, abs=1e-5
    )
    assert len({round(v, 6) for v in one_by_one}) > 1  # a real score, not a constant
    with pytest.raises(ValueError, match="use last, min or prod"):
        prm_reward(prm, "mean")


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_sft_then_grpo_moves_weights_and_sees_columns(tiny_model: Path, tmp_path: Path) -> None:
    sft = train_sft(ROWS, tiny_model, tmp_path, CFG)
    before, after_sft = _weights(tiny_model), _weights(sft)
    assert any(not before[k].equal(after_sft[k]) for k in before)
    seen: list[dict] = []

    def probe(prompts, completions, case, **kwargs):
        seen.append({"n": len(completions), "case": case[0]})
        return [float(i % 2) for i in range(len(completions))]

    out, history = train_grpo(
        ROWS, sft, tmp_path / "rl", [probe], weights=[1.0], cfg=CFG, report_to=()
    )
    assert seen and json.loads(seen[0]["case"])["id"] in {c.id for c in CASES}
    assert max(h.get("step", 0) for h in history) == 2
    after = _weights(out)
    assert any(not after_sft[k].equal(after[k]) for k in after_sft)


def test_resume_continues_the_step_count(tiny_model: Path, tmp_path: Path) -> None:
    calls: list[int] = []

    def const(prompts, completions, **kwargs):
        calls.append(len(completions))
        return [float(i % 2) for i in range(len(completions))]

    train_grpo(ROWS, tiny_model, tmp_path, [const], weights=[1.0], cfg=CFG, report_to=())
    assert latest_checkpoint(tmp_path / "grpo-checkpoints").name == "checkpoint-2"
    first = len(calls)
    longer = CFG.model_copy(update={"grpo_max_steps": 3})
    _, history = train_grpo(
        ROWS, tiny_model, tmp_path, [const], weights=[1.0], cfg=longer, report_to=()
    )
    assert max(h["step"] for h in history) == 3
    assert len(calls) - first == first // 2, "resumed at step 2: only step 3 generates"
    assert latest_checkpoint(tmp_path / "grpo-checkpoints").name == "checkpoint-3"


def test_bad_configs_are_refused(tiny_model: Path, tiny_reward_model: Path, tmp_path) -> None:
    with pytest.raises(
        ValidationError, match=r"\(3\) x .* = 3 completions .* num_generations \(2\)"
    ):
        PolicyTrainConfig(batch_size=3, num_generations=2)
    with pytest.raises(PonderError, match="not a causal LM"):
        check_causal_lm(tiny_reward_model)
    check_causal_lm(tiny_model)
    with pytest.raises(PonderError, match="2 weights for 1"):
        train_grpo(ROWS, tiny_model, tmp_path, [lambda **k: []], weights=[1.0, 2.0], cfg=CFG)
    with pytest.raises(PonderError, match="no GRPO rows"):
        train_grpo([], tiny_model, tmp_path, [lambda **k: []], weights=[1.0], cfg=CFG)


def test_grpo_with_the_calculator_uses_the_tool_rollout(tiny_model: Path, tmp_path: Path) -> None:
    # the rollout_func path (models.rollout) runs on the live tiny model: every completion's
    # calculator calls reach the reward functions as a column (a random model makes none)
    seen: list[dict] = []

    def probe(prompts, completions, **kwargs):
        seen.append(kwargs)
        return [0.0] * len(completions)

    one = CFG.model_copy(update={"grpo_max_steps": 1})
    train_grpo(
        ROWS, tiny_model, tmp_path, [probe], weights=[1.0], cfg=one, report_to=(), tools=["calc"]
    )
    assert seen and "calc_calls" in seen[0]
    assert len(seen[0]["calc_calls"]) == len(seen[0]["case"])

"""GRPO rollouts execute calls exactly as inference does (scripted stand-in generator)."""

from __future__ import annotations

from models.engine import SamplingConfig
from models.example import train_tiny_tokenizer
from models.rollout import make_rollout
from models.tools import ToolGenerator
from tests.models.scripted import ScriptedGenerator

AG = "AG = <<140 - (100 + 24)>> mmol/L.\n\nAnswer: 16"


def test_rollout_and_inference_give_the_same_text_and_calls() -> None:
    tok = train_tiny_tokenizer()
    scripts = {"Q1:": AG, "Q2:": "x <<2 ** 3>> y <<1/0>> z"}
    infer = ToolGenerator(ScriptedGenerator(tok, scripts))
    want = [
        o.completions[0]
        for o in infer.generate(list(scripts), SamplingConfig(max_tokens=100, temperature=1.0))
    ]
    scripted = ScriptedGenerator(tok, scripts)
    rollout = make_rollout(100, 1.0, generator_for=lambda trainer: scripted)
    prompts = [tok.encode("Q1:")] * 2 + [tok.encode("Q2:")] * 2  # TRL repeats each prompt
    out = rollout(prompts, trainer=None)
    assert len(out["completion_ids"]) == 4 and scripted.calls == 3  # Q2 has 2 calls in a row
    for i, expected in zip([0, 2], want, strict=True):
        assert tok.decode(out["completion_ids"][i]) == expected.text
        assert [c["result"] for c in out["calc_calls"][i]] == [c.result for c in expected.calls]
        inserted = sum(1 for m in out["env_mask"][i] if m == 0)
        assert inserted == expected.n_inserted > 0
        assert len(out["logprobs"][i]) == len(out["completion_ids"][i]) == len(out["env_mask"][i])
    assert out["calc_calls"][2][1]["error"] == "division by zero"

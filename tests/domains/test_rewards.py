"""Reward parts follow TRL's contract and rank good completions above bad ones."""

from __future__ import annotations

import pytest

from domains.base import get_domain
from domains.errors import PonderError
from domains.rewards import combined_weights


@pytest.fixture(scope="module")
def batch():
    d = get_domain("finance_risk")
    cases = d.generate(3, 0, "credit_capital", 2)
    case_col = [c.model_dump_json() for c in cases]
    good = cases[0].reference
    rambling = (
        "\n\n".join(
            f"## Step {k}: thinking more about the exposure, its PD, LGD and maturity again."
            for k in range(1, 30)
        )
        + "\n\n"
        + good.split("\n\n")[-1]
    )
    bad = "The capital is probably fine."
    return d, case_col, [good, rambling, bad]


def test_contract_and_ranking(batch) -> None:
    d, case_col, completions = batch
    parts = d.reward_parts
    assert set(parts) == {"correctness", "format", "brevity", "efficiency"}
    prompts = [d.prompt(d.generate(1, 0, "credit_capital", 2)[0])] * 3
    same_case = [case_col[0]] * 3
    scores = {
        name: fn(prompts=prompts, completions=completions, case=same_case, extra=[1, 2, 3])
        for name, fn in parts.items()
    }
    for name, values in scores.items():
        assert len(values) == 3 and all(v is None or 0.0 <= v <= 1.0 for v in values), name
        assert parts[name].__name__ == name
    assert scores["correctness"] == [1.0, 1.0, 0.0]
    assert scores["format"][0] == 1.0 and scores["format"][2] == 0.0
    assert scores["brevity"][0] == 1.0 > scores["brevity"][1]
    assert scores["efficiency"][0] > scores["efficiency"][1] > scores["efficiency"][2] == 0.0


def test_chat_completions_and_missing_truth(batch) -> None:
    d, case_col, completions = batch
    import json

    no_truth = json.loads(case_col[0]) | {"truth": None, "reference": None}
    chat = [[{"role": "assistant", "content": completions[0]}]]
    assert d.reward_parts["correctness"]([None], chat, case=[case_col[0]]) == [1.0]
    assert d.reward_parts["correctness"]([None], chat, case=[no_truth]) == [None]
    assert d.reward_parts["brevity"]([None], chat, case=[no_truth]) == [None]


def test_weights_validated() -> None:
    d = get_domain("medicine")
    assert combined_weights(d, ["correctness", "format"]) == [1.0, 0.1]
    with pytest.raises(PonderError, match="no weight"):
        combined_weights(d, ["correctness", "orm"])


def test_efficiency_discounts_failed_and_redundant_calls() -> None:
    from domains.rewards import call_quality, efficiency_score

    clean = "AG = <<140 - (100 + 24)>> = 16"
    assert call_quality(clean) == 1.0 and call_quality("no calls at all") == 1.0
    assert call_quality(clean + " then <<1/0>> = error: division by zero") == 0.5
    assert call_quality(clean + " and again <<140-(100+24)>> = 16") == 0.5
    ref = clean + " mmol/L"
    assert efficiency_score(clean, ref, 1.0) == 1.0
    assert efficiency_score(clean + " <<1/0>>", ref, 1.0) < 1.0
    assert efficiency_score(clean, ref, 0.0) == 0.0  # correctness still dominates

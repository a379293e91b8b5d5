"""PRM pieces: TD(lambda) targets by hand, Math-Shepherd returns, training and scoring."""

from __future__ import annotations

from pathlib import Path

import pytest

from domains.errors import PonderError
from models.prm import (
    ProcessRM,
    auroc,
    mc_step_returns,
    step_rows,
    td_lambda_targets,
    train_prm,
    tree_td_targets,
)
from models.reward import RMTrainConfig, split_steps
from models.search.tree import ThoughtTree


def _tree() -> ThoughtTree:
    """root -> a (step 1) -> {b, c} (step 2); b -> d (step 3)."""
    tree = ThoughtTree(prompt_token_ids=[1, 2])
    a = tree.add(tree.root, text="A\n\n")
    b = tree.add(a, text="B\n\n")
    tree.add(a, text="C")
    tree.add(b, text="D")
    return tree


def test_td_lambda_on_a_hand_built_tree() -> None:
    tree = _tree()
    kids = {n.id: [c.id for c in tree.children(n)] for n in tree.nodes}
    mc = {1: 0.5, 2: 0.75, 3: 0.0, 4: 1.0}  # a, b, c (wrong leaf), d (correct leaf)
    values = {2: 0.6, 3: 0.2, 4: 0.9}  # the current PRM's estimates
    got = tree_td_targets(kids, mc, values, lam=0.5)
    # a: 0.5*0.5 + 0.5*mean(0.6, 0.2) = 0.45; b: 0.5*0.75 + 0.5*0.9 = 0.825; leaves keep MC
    assert got == pytest.approx({1: 0.45, 2: 0.825, 3: 0.0, 4: 1.0})
    assert tree_td_targets(kids, mc, values, lam=1.0) == pytest.approx(mc)  # pure MC
    # lam = 0 with no value model: each node takes its children's mean MC return
    assert tree_td_targets(kids, mc, None, lam=0.0)[1] == pytest.approx(0.375)


def test_td_lambda_on_a_chain() -> None:
    assert td_lambda_targets([0.2, 0.6, 1.0], [0.5, None, None], 0.25) == pytest.approx(
        [0.25 * 0.2 + 0.75 * 0.5, 0.25 * 0.6 + 0.75 * 1.0, 1.0]
    )
    with pytest.raises(PonderError, match="td_lambda"):
        td_lambda_targets([1.0], [None], 1.5)


class _FakeGen:
    """Stands in for the engine: returns canned completions (the test is of the counting)."""

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, prompts, params):
        from models.engine import Completion, GenerationOutput

        self.calls += 1
        texts = ["right", "wrong", "right", "wrong"][: params.n]
        return [
            GenerationOutput(
                prompt_token_ids=p,
                completions=[
                    Completion(text=t, token_ids=[1], finish_reason="stop", cumulative_logprob=0.0)
                    for t in texts
                ],
            )
            for p in prompts
        ]


def test_mc_step_returns_one_call_and_fractions() -> None:
    from models.engine import SamplingConfig

    gen = _FakeGen()
    got = mc_step_returns(
        gen, [[1], [2]], 4, SamplingConfig(max_tokens=8), lambda i, t: t == "right" or i == 1
    )
    assert got == [0.5, 1.0] and gen.calls == 1


def test_split_steps_round_trips() -> None:
    text = "## Step 1: a\n\n## Step 2: b\n\n\n\nAnswer: {}"
    steps = split_steps(text)
    assert "".join(steps) == text and len(steps) == 3


def test_train_and_score_prm(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    msgs = [{"role": "user", "content": "add 2 and 2"}]
    good, bad = ["## Step 1: 2+2=4\n\n", "Answer: 4"], ["## Step 1: 2+2=5\n\n", "Answer: 5"]
    rows = step_rows(tok, [(msgs, good, [1.0, 1.0]), (msgs, bad, [0.0, 0.0])] * 4)
    assert rows[0]["ends"][-1] == len(rows[0]["input_ids"]) - 1
    cfg = RMTrainConfig(max_steps=30, batch_size=4, learning_rate=3e-3)
    path, history = train_prm(rows, tiny_model, tmp_path, cfg)
    assert history[-1]["train_loss"] < 0.69  # below chance BCE
    prm = ProcessRM(path)
    v_good, v_bad = prm.values([prm.encode(msgs, good), prm.encode(msgs, bad)])
    assert v_good[-1] > v_bad[-1]
    assert auroc([1, 1, 0, 0], v_good + v_bad) == pytest.approx(1.0)
    assert auroc([1, 1], [0.2, 0.3]) is None

"""ORM: TRL RewardTrainer on tiny pairs, batched scoring, and learned scorers in search."""

from __future__ import annotations

from pathlib import Path

import pytest

from domains.errors import PonderError
from models.prm import ProcessRM
from models.reward import OutcomeRM, RewardScorer, RMTrainConfig, encode_segments, train_orm
from models.search import SearchConfig, run_search
from models.search.base import Problem

MSGS = [{"role": "user", "content": "add 2 and 2"}]


def _rows(tok, n: int = 8) -> list[dict]:
    good = encode_segments(tok, MSGS, ["## Step 1: 2+2=4\n\nAnswer: 4"])[0]
    bad = encode_segments(tok, MSGS, ["## Step 1: 2+2=5\n\nAnswer: 5"])[0]
    return [{"chosen_ids": good, "rejected_ids": bad, "margin": 0.5}] * n


def test_train_orm_prefers_chosen(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = RMTrainConfig(max_steps=20, batch_size=4, learning_rate=3e-3)
    path, history = train_orm(_rows(tok), tiny_model, tmp_path, cfg)
    assert any("loss" in h for h in history)
    orm = OutcomeRM(path, batch_size=1)  # batch 1 vs 2 must agree (padding is ignored)
    problem = Problem(id="p", prompt=MSGS, answer_of=lambda t: None)
    texts = ["## Step 1: 2+2=4\n\nAnswer: 4", "## Step 1: 2+2=5\n\nAnswer: 5"]
    one = orm.score_outcomes(problem, texts, [[], []])
    orm.batch_size = 2
    assert orm.score_outcomes(problem, texts, [[], []]) == pytest.approx(one, abs=1e-4)
    assert one[0] > one[1] and all(0.0 <= s <= 1.0 for s in one)
    with pytest.raises(PonderError, match="pairs"):
        train_orm([], tiny_model, tmp_path, cfg)


@pytest.fixture(scope="module")
def random_rms(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Untrained ORM and PRM heads on the tiny backbone (scores are arbitrary but fixed)."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    tok = AutoTokenizer.from_pretrained(tiny_model)
    out = []
    for cls, name in (
        (AutoModelForSequenceClassification, "orm"),
        (AutoModelForTokenClassification, "prm"),
    ):
        torch.manual_seed(0)
        model = cls.from_pretrained(tiny_model, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id or tok.eos_token_id
        target = tmp_path_factory.mktemp(name)
        model.save_pretrained(target)
        tok.save_pretrained(target)
        out.append(target)
    return out[0], out[1]


@pytest.mark.parametrize("strategy", ["beam", "mcts", "weighted_best_of_n"])
def test_learned_scorers_drive_search(vllm_engine, random_rms, strategy: str) -> None:
    orm, prm = OutcomeRM(random_rms[0]), ProcessRM(random_rms[1])
    scorer = RewardScorer(orm=orm, prm=prm)
    problems = [
        Problem(
            id=f"p{i}",
            prompt=[{"role": "user", "content": f"{i}+{i}?"}],
            answer_of=lambda t: str(len(t) % 3),
        )
        for i in range(2)
    ]
    cfg = SearchConfig(width=4, branch=2, max_tokens=96, step_tokens=16, max_depth=2, seed=1)
    results = run_search(strategy, problems, cfg, vllm_engine, scorer)
    assert all(r.scorer == "orm+prm" and not r.oracle for r in results)
    tree, problem = results[0].tree, problems[0]
    scored = [n for n in tree.nodes[1:] if n.prm_score is not None]
    assert scored, "the learned scorer set node scores"
    node = scored[0]
    direct = (
        orm.score_outcomes(problem, [tree.text(node)], [tree.path(node)])[0]
        if strategy == "weighted_best_of_n" or (node.terminal and strategy == "mcts")
        else prm.score(problem, tree.path(node), tree.text(node))[-1]
    )
    assert node.prm_score == pytest.approx(direct, abs=1e-4)


def test_reward_scorer_needs_a_model() -> None:
    with pytest.raises(PonderError, match="reward model"):
        RewardScorer()

"""Every strategy on the tiny model through vLLM: batching, budgets, tree invariants."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from domains.errors import PonderError
from models.search import STRATEGIES, SearchConfig, run_search
from models.search.base import Problem
from models.search.scorers import LogprobScorer, OracleScorer
from models.search.tree import ThoughtTree


def _problems(n: int = 3) -> list[Problem]:
    return [
        Problem(
            id=f"p{i}",
            prompt=[{"role": "user", "content": f"What is {i} + {i}?"}],
            answer_of=lambda text: str(len(text) % 3),
        )
        for i in range(n)
    ]


CFG = SearchConfig(
    width=4,
    branch=2,
    max_tokens=256,
    step_tokens=24,
    max_depth=3,
    simulations=4,
    temperature=1.0,
    seed=3,
)


def _check_tree(tree: ThoughtTree) -> None:
    for node in tree.nodes[1:]:
        parent = tree.nodes[node.parent]
        assert node.depth == parent.depth + 1
        assert node.n_tokens == len(node.token_ids) > 0
    assert tree.tokens_generated == sum(n.n_tokens for n in tree.nodes)
    for node in tree.nodes:
        children = tree.children(node)
        assert len({tuple(c.token_ids) for c in children}) == len(children), "dup siblings"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_runs_batched(name: str, vllm_engine) -> None:
    results = run_search(name, _problems(), CFG, vllm_engine, LogprobScorer())
    assert [r.problem_id for r in results] == ["p0", "p1", "p2"]
    calls = results[0].generator_calls
    if name in ("cot", "self_consistency", "best_of_n", "weighted_best_of_n"):
        assert calls == 1, "all problems' samples go in one Generator call"
    elif name == "beam":
        assert 1 <= calls <= CFG.max_depth, "one Generator call per depth for all problems"
    else:
        assert 1 <= calls <= CFG.simulations + 1
    for r in results:
        _check_tree(r.tree)
        assert r.tokens_generated > 0 and 0.0 <= r.confidence <= 1.0
        assert r.scorer == "policy_logprob" and not r.oracle
        width = 1 if name == "cot" else CFG.width
        if name != "mcts":
            assert len(r.tree.children(r.tree.root)) <= width


def test_mcts_visit_counts_add_up(vllm_engine) -> None:
    results = run_search("mcts", _problems(2), CFG, vllm_engine, LogprobScorer())
    for r in results:
        tree = r.tree
        for node in tree.nodes:
            children = tree.children(node)
            if not children:
                continue
            own = 0 if node.parent is None else 1
            assert node.visits == own + 1 + sum(c.visits - 1 for c in children), node.id
            assert all(c.prior is not None for c in children)
            assert sum(c.prior for c in children) == pytest.approx(1.0)


def test_beam_prefixes_hit_the_cache(vllm_engine) -> None:
    before = vllm_engine.prefix_cache_stats()
    cfg = SearchConfig(
        width=4, branch=2, max_tokens=512, step_tokens=48, max_depth=3, temperature=1.0
    )
    long = [Problem(id="long", prompt=list(range(30, 330)), answer_of=lambda t: None)]
    run_search("beam", long, cfg, vllm_engine, LogprobScorer())
    after = vllm_engine.prefix_cache_stats()
    assert after["hits"] - before["hits"] >= 256


def test_oracle_scorer_is_marked(vllm_engine) -> None:
    oracle = OracleScorer(lambda pid, text: 1.0 if len(text) % 2 else 0.0)
    results = run_search("best_of_n", _problems(1), CFG, vllm_engine, oracle)
    assert results[0].oracle and results[0].scorer == "oracle_verifier"


def test_bad_strategy_and_width(vllm_engine) -> None:
    with pytest.raises(PonderError) as err:
        run_search("tree_of_thoughts", _problems(1), CFG, vllm_engine, LogprobScorer())
    assert "beam" in err.value.fix and "mcts" in err.value.fix
    with pytest.raises(ValidationError, match="width"):
        SearchConfig(width=0)
    assert run_search("beam", [], CFG, vllm_engine, LogprobScorer()) == []


def _crc_score(pid: str, text: str) -> float:
    """A deterministic oracle with (almost surely) distinct scores per text."""
    import zlib

    return (zlib.crc32(f"{pid}|{text}".encode()) % 10_007) / 10_007


def test_best_of_n_chooses_the_highest_oracle_score(vllm_engine) -> None:
    for r, p in zip(
        run_search("best_of_n", _problems(2), CFG, vllm_engine, OracleScorer(_crc_score)),
        _problems(2),
        strict=True,
    ):
        texts = [c.text for c in r.tree.children(r.tree.root)]
        assert len(texts) == CFG.width
        assert r.text == max(texts, key=lambda t: _crc_score(p.id, t))


VOTERS = [("weighted_best_of_n", "weighted"), ("self_consistency", "majority")]


@pytest.mark.parametrize(("name", "how"), VOTERS)
def test_voting_strategies_choose_the_heaviest_answer(name: str, how: str, vllm_engine) -> None:
    problems = _problems(3)
    results = run_search(name, problems, CFG, vllm_engine, OracleScorer(_crc_score))
    for r, p in zip(results, problems, strict=True):
        kids = r.tree.children(r.tree.root)
        mass: dict[str, float] = {}
        for c in kids:
            if c.answer is not None:
                weight = 1.0 if how == "majority" else _crc_score(p.id, c.text)
                mass[c.answer] = mass.get(c.answer, 0.0) + weight
        top = max(mass.values())
        assert mass[r.answer] == top  # the chosen answer carries the most mass (or votes)
        same = [c for c in kids if c.answer == r.answer]
        assert r.text == max(same, key=lambda c: _crc_score(p.id, c.text)).text


def test_beam_chooses_the_best_finished_path(vllm_engine) -> None:
    cfg = CFG.model_copy(update={"answer_agg": "naive", "score_agg": "last"})
    problems = _problems(2)
    for r, p in zip(
        run_search("beam", problems, cfg, vllm_engine, OracleScorer(_crc_score)),
        problems,
        strict=True,
    ):
        ends = [n for n in r.tree.nodes if n.terminal]
        assert ends, "depth-capped paths are terminal"
        best = max(ends, key=lambda n: _crc_score(p.id, r.tree.text(n)))
        assert r.text == r.tree.text(best)


@pytest.mark.parametrize("select_by", ["visits", "value"])
def test_mcts_follows_the_best_child_at_every_level(select_by: str, vllm_engine) -> None:
    cfg = CFG.model_copy(update={"select_by": select_by})
    key = (
        (lambda k: (k.visits, k.value))
        if select_by == "visits"
        else (lambda k: (k.value, k.visits))
    )
    for r in run_search("mcts", _problems(2), cfg, vllm_engine, OracleScorer(_crc_score)):
        tree = r.tree
        (leaf,) = [n for n in tree.nodes if not tree.children(n) and tree.text(n) == r.text]
        path = tree.path(leaf)
        assert path[0].parent == tree.root.id
        for node in path:
            siblings = tree.children(tree.nodes[node.parent])
            assert key(node) == max(key(s) for s in siblings)

"""Step-level beam search: N beams, k proposals each per depth, top N/k kept by PRM score.

At each depth the live beams of every problem propose k next steps in one Generator call
(``n=k`` per beam). The step scorer rates every proposal, paths are ranked by their
aggregated step scores (last/min/prod), and the best N/k live paths survive. A path ends
at an answer, at the depth cap, or when the token budget is spent.
"""

from __future__ import annotations

from models.engine import Generator
from models.search.base import (
    Problem,
    Scorer,
    SearchConfig,
    SearchResult,
    expand,
    score_paths,
    vote,
)
from models.search.tree import Node, ThoughtTree, aggregate


def beam(
    problems: list[Problem], cfg: SearchConfig, generator: Generator, scorer: Scorer
) -> list[SearchResult]:
    trees = [ThoughtTree(prompt_token_ids=generator.encode(p.prompt)) for p in problems]
    keep = max(cfg.width // cfg.branch, 1)
    live: list[list[Node]] = [[t.root] for t in trees]
    done: list[list[Node]] = [[] for _ in trees]
    for depth in range(cfg.max_depth):
        order = [i for i, t in enumerate(trees) if live[i] and t.tokens_generated < cfg.max_tokens]
        if not order:
            break
        picks = [
            (i, node, cfg.width if depth == 0 else cfg.branch) for i in order for node in live[i]
        ]
        kids = expand(generator, problems, trees, picks, cfg=cfg, per_step=True)
        fresh: dict[int, list[Node]] = {i: [] for i in order}
        for (i, _, _), children in zip(picks, kids, strict=True):
            fresh[i] += children
        _score(problems, trees, fresh, scorer)
        for i in order:
            done[i] += [n for n in fresh[i] if n.terminal]
            candidates = [n for n in fresh[i] if not n.terminal]
            candidates.sort(key=lambda n: _path_score(trees[i], n, cfg), reverse=True)
            live[i] = candidates[:keep]
    return [
        _finish(p, t, d or lv, cfg, scorer)
        for p, t, d, lv in zip(problems, trees, done, live, strict=True)
    ]


def _score(
    problems: list[Problem], trees: list[ThoughtTree], fresh: dict[int, list[Node]], scorer: Scorer
) -> None:
    """Every new step of every problem, in one batched step-scorer pass."""
    nodes = [(i, n) for i, kids in fresh.items() for n in kids]
    items = [(problems[i], trees[i].path(n), trees[i].text(n)) for i, n in nodes]
    for (_, node), scores in zip(nodes, score_paths(scorer, items), strict=True):
        node.prm_score = scores[-1] if scores else 0.0
        node.visits = 1


def _path_score(tree: ThoughtTree, node: Node, cfg: SearchConfig) -> float:
    return aggregate([n.prm_score or 0.0 for n in tree.path(node)], cfg.score_agg)


def _finish(
    problem: Problem, tree: ThoughtTree, ends: list[Node], cfg: SearchConfig, scorer: Scorer
) -> SearchResult:
    scores = [_path_score(tree, n, cfg) for n in ends]
    for n, s in zip(ends, scores, strict=True):
        n.value = s
    best, conf = vote([n.answer for n in ends], scores, cfg.answer_agg)
    chosen = ends[best] if best >= 0 else None
    return SearchResult(
        problem_id=problem.id,
        strategy="beam",
        answer=chosen.answer if chosen else None,
        text=tree.text(chosen) if chosen else "",
        confidence=conf,
        tokens_generated=tree.tokens_generated,
        scorer=scorer.name,
        oracle=scorer.oracle,
        tree=tree,
    )

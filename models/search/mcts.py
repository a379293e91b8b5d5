"""MCTS with PUCT over reasoning steps.

Each simulation selects one leaf per problem by PUCT (priors are the policy's step
log-probabilities softmaxed over siblings), expands the selected leaves of all problems in ONE
Generator call (``n=width`` at the root, like beam's first depth, ``n=branch`` below),
values the new children with the step scorer (terminal ones with
the outcome scorer) and backs the mean child value up to the root. The answer follows the
most-visited (or highest-value) children; a path that stops short of an answer is finished
by one batched rollout.
"""

from __future__ import annotations

import math

from models.engine import Generator
from models.search.base import Problem, Scorer, SearchConfig, SearchResult, expand, score_nodes
from models.search.tree import Node, ThoughtTree


def mcts(
    problems: list[Problem], cfg: SearchConfig, generator: Generator, scorer: Scorer
) -> list[SearchResult]:
    trees = [ThoughtTree(prompt_token_ids=generator.encode(p.prompt)) for p in problems]
    for _ in range(cfg.simulations):
        picks = [
            (i, _select(t, cfg)) for i, t in enumerate(trees) if t.tokens_generated < cfg.max_tokens
        ]
        for i, leaf in picks:
            if leaf.terminal:
                _backup(trees[i], leaf, leaf.value)
        grow = [(i, leaf) for i, leaf in picks if not leaf.terminal]
        if not grow:  # every tree is finished or out of budget
            break
        kids = expand(
            generator,
            problems,
            trees,
            [(i, leaf, _fanout(leaf, cfg)) for i, leaf in grow],
            cfg=cfg,
            per_step=True,
        )
        new = [
            (problems[i], trees[i], c) for (i, _), cs in zip(grow, kids, strict=True) for c in cs
        ]
        score_nodes(scorer, new)
        for (i, leaf), children in zip(grow, kids, strict=True):
            _evaluate(trees[i], leaf, children)
    chosen = [_choose(t, cfg) for t in trees]
    _rollout(problems, trees, chosen, cfg, generator=generator, scorer=scorer)
    return [_result(p, t, c, scorer) for p, t, c in zip(problems, trees, chosen, strict=True)]


def _puct(parent: Node, child: Node, c: float) -> float:
    q = child.value if child.visits else 0.0
    return q + c * (child.prior or 0.0) * math.sqrt(parent.visits + 1) / (1 + child.visits)


def _select(tree: ThoughtTree, cfg: SearchConfig) -> Node:
    node = tree.root
    while True:
        kids = tree.children(node)
        if not kids or node.terminal:
            return node
        node = max(kids, key=lambda k: _puct(node, k, cfg.c_puct))


def _fanout(leaf: Node, cfg: SearchConfig) -> int:
    """The root draws ``width`` first steps (like beam's first depth); deeper leaves
    ``branch``. This keeps the first call as wide as best-of-N's."""
    return cfg.width if leaf.parent is None else cfg.branch


def _evaluate(tree: ThoughtTree, leaf: Node, children: list[Node]) -> None:
    """Priors from the policy's step logprobs; values from the (already set) scores."""
    if not children:  # nothing new (all duplicates / empty): treat the leaf as a dead end
        leaf.terminal = True
        _backup(tree, leaf, 0.0)
        return
    means = [c.logprob / max(c.n_tokens, 1) for c in children]
    top = max(means)
    weights = [math.exp(m - top) for m in means]
    for child, w in zip(children, weights, strict=True):
        child.prior = w / sum(weights)
        child.value, child.visits = child.prm_score, 1
    _backup(tree, leaf, sum(c.value for c in children) / len(children))


def _backup(tree: ThoughtTree, node: Node, value: float) -> None:
    while True:
        node.value = (node.value * node.visits + value) / (node.visits + 1)
        node.visits += 1
        if node.parent is None:
            return
        node = tree.nodes[node.parent]


def _choose(tree: ThoughtTree, cfg: SearchConfig) -> Node:
    node = tree.root
    while kids := tree.children(node):
        key = (
            (lambda k: (k.visits, k.value))
            if cfg.select_by == "visits"
            else (lambda k: (k.value, k.visits))
        )
        node = max(kids, key=key)
    return node


def _rollout(
    problems: list[Problem],
    trees: list[ThoughtTree],
    chosen: list[Node],
    cfg: SearchConfig,
    *,
    generator: Generator,
    scorer: Scorer,
) -> None:
    """Finish paths that stopped before an answer, all in one call."""
    todo = [
        i
        for i, n in enumerate(chosen)
        if not n.terminal and trees[i].tokens_generated < cfg.max_tokens
    ]
    kids = expand(
        generator, problems, trees, [(i, chosen[i], 1) for i in todo], cfg=cfg, per_step=False
    )
    for i, children in zip(todo, kids, strict=True):
        if children:
            end = children[0]
            end.terminal = True
            end.answer = problems[i].answer_of(trees[i].text(end))
            end.prm_score = scorer.score_outcomes(
                problems[i], [trees[i].text(end)], [trees[i].path(end)]
            )[0]
            end.value, end.visits = end.prm_score, 1
            _backup(trees[i], chosen[i], end.value)
            chosen[i] = end


def _result(problem: Problem, tree: ThoughtTree, node: Node, scorer: Scorer) -> SearchResult:
    return SearchResult(
        problem_id=problem.id,
        strategy="mcts",
        answer=node.answer,
        text=tree.text(node),
        confidence=float(min(max(node.value, 0.0), 1.0)),
        tokens_generated=tree.tokens_generated,
        scorer=scorer.name,
        oracle=scorer.oracle,
        tree=tree,
    )

"""Whole-completion strategies: cot, self_consistency, best_of_n, weighted_best_of_n.

All draw their N completions for every problem in one Generator call (``n=N`` per
request), keep them as depth-1 nodes of the tree, score them with the outcome scorer and
vote. They differ only in N and in how the answer is chosen.
"""

from __future__ import annotations

from models.engine import Generator
from models.search.base import OutcomeScorer, Problem, SearchConfig, SearchResult, expand, vote
from models.search.tree import ThoughtTree


def _sample(
    problems: list[Problem],
    cfg: SearchConfig,
    generator: Generator,
    scorer: OutcomeScorer,
    *,
    n: int,
    how: str,
    name: str,
) -> list[SearchResult]:
    trees = [ThoughtTree(prompt_token_ids=generator.encode(p.prompt)) for p in problems]
    kids = expand(
        generator,
        problems,
        trees,
        [(i, t.root, n) for i, t in enumerate(trees)],
        cfg=cfg,
        per_step=False,
    )
    results = []
    for problem, tree, children in zip(problems, trees, kids, strict=True):
        texts = [c.text for c in children]
        scores = scorer.score_outcomes(problem, texts, [[c] for c in children])
        for c, s in zip(children, scores, strict=True):
            c.prm_score = c.value = s
            c.visits = 1
        best, conf = vote([c.answer for c in children], scores, how)
        chosen = children[best] if best >= 0 else None
        results.append(
            SearchResult(
                problem_id=problem.id,
                strategy=name,
                answer=chosen.answer if chosen else None,
                text=chosen.text if chosen else "",
                confidence=conf,
                tokens_generated=tree.tokens_generated,
                scorer=scorer.name,
                oracle=scorer.oracle,
                tree=tree,
            )
        )
    return results


def cot(
    problems: list[Problem], cfg: SearchConfig, generator: Generator, scorer: OutcomeScorer
) -> list[SearchResult]:
    """One sample (greedy when temperature is 0)."""
    return _sample(problems, cfg, generator, scorer, n=1, how="naive", name="cot")


def self_consistency(
    problems: list[Problem], cfg: SearchConfig, generator: Generator, scorer: OutcomeScorer
) -> list[SearchResult]:
    """N samples, majority vote over parsed answers."""
    return _sample(
        problems, cfg, generator, scorer, n=cfg.width, how="majority", name="self_consistency"
    )


def best_of_n(
    problems: list[Problem], cfg: SearchConfig, generator: Generator, scorer: OutcomeScorer
) -> list[SearchResult]:
    """N samples, the single best-scored one."""
    return _sample(problems, cfg, generator, scorer, n=cfg.width, how="naive", name="best_of_n")


def weighted_best_of_n(
    problems: list[Problem], cfg: SearchConfig, generator: Generator, scorer: OutcomeScorer
) -> list[SearchResult]:
    """N samples; each distinct answer sums its completions' scores."""
    return _sample(
        problems, cfg, generator, scorer, n=cfg.width, how="weighted", name="weighted_best_of_n"
    )

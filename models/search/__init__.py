"""Test-time search over reasoning paths: one signature, picked from ``STRATEGIES``.

``run_search(name, problems, cfg, generator, scorer)`` looks the strategy up (an unknown
name lists the valid ones), counts the Generator calls it makes, and returns one
``SearchResult`` (answer, confidence, tokens, whole thought tree) per problem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator

from domains.errors import PonderError
from models.engine import Generator
from models.search.base import Problem, Scorer, SearchConfig, SearchResult
from models.search.beam import beam
from models.search.mcts import mcts
from models.search.sampling import best_of_n, cot, self_consistency, weighted_best_of_n

Strategy = Callable[[list[Problem], SearchConfig, Generator, Scorer], list[SearchResult]]
STRATEGIES: dict[str, Strategy] = {
    "cot": cot,
    "self_consistency": self_consistency,
    "best_of_n": best_of_n,
    "weighted_best_of_n": weighted_best_of_n,
    "beam": beam,
    "mcts": mcts,
}


class CountingGenerator:
    """A Generator proxy that counts ``generate`` calls (batching discipline is checked)."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.calls = 0

    def generate(self, *args: object, **kwargs: object) -> list:
        self.calls += 1
        return self.inner.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _known_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; use one of {sorted(STRATEGIES)}")
    return name


# The strategy knob of every stage that searches, checked when the params are built.
StrategyName = Annotated[str, AfterValidator(_known_strategy)]


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise PonderError(
            "strategy", f"unknown strategy {name!r}", f"use one of {sorted(STRATEGIES)}"
        )
    return STRATEGIES[name]


def run_search(
    name: str, problems: list[Problem], cfg: SearchConfig, generator: Generator, scorer: Scorer
) -> list[SearchResult]:
    """Run one strategy over a batch of problems."""
    strategy = get_strategy(name)
    if not problems:
        return []
    counting = CountingGenerator(generator)
    results = strategy(problems, cfg, counting, scorer)  # type: ignore[arg-type]
    for r in results:
        r.generator_calls = counting.calls
    return results


__all__ = ["STRATEGIES", "Problem", "SearchConfig", "SearchResult", "get_strategy", "run_search"]

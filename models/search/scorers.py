"""Built-in scorers until the reward models land: the policy's own logprobs, and an oracle.

``LogprobScorer`` needs no extra model call: each node already carries its cumulative
logprob, and a step's score is its geometric-mean token probability. ``OracleScorer``
grades completions with the domain verifier, so it knows the labels: use it for
evaluation only. Every result it chooses is marked ``oracle=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from models.search.base import Problem
from models.search.tree import Node


def mean_token_prob(nodes: list[Node]) -> float:
    tokens = sum(n.n_tokens for n in nodes)
    return math.exp(sum(n.logprob for n in nodes) / tokens) if tokens else 0.0


class LogprobScorer:
    """Policy mean-logprob scorer (steps and outcomes)."""

    name = "policy_logprob"
    oracle = False

    def score(self, problem: Problem, steps: list[Node], text: str) -> list[float]:
        return [mean_token_prob([s]) for s in steps]

    def score_outcomes(
        self, problem: Problem, texts: list[str], paths: list[list[Node]]
    ) -> list[float]:
        return [mean_token_prob(p) for p in paths]


class OracleScorer:
    """Verifier-backed scorer: ``verify(problem_id, text) -> score in [0, 1]``. EVAL ONLY."""

    name = "oracle_verifier"
    oracle = True

    def __init__(self, verify: Callable[[str, str], float]) -> None:
        self.verify = verify

    def score(self, problem: Problem, steps: list[Node], text: str) -> list[float]:
        last = self.verify(problem.id, text) if steps and steps[-1].terminal else 0.5
        return [0.5] * (len(steps) - 1) + [last] if steps else []

    def score_outcomes(
        self, problem: Problem, texts: list[str], paths: list[list[Node]]
    ) -> list[float]:
        return [self.verify(problem.id, t) for t in texts]

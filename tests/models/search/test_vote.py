"""`vote()` against a table worked out by hand: naive, weighted and majority voting, with
ties, `None` answers, all-`None` votes, negative and out-of-range scores."""

from __future__ import annotations

import pytest

from models.search.base import vote

A, B = "a", "b"
TABLE = [
    # answers, scores, how, chosen index, confidence
    ([A, B, A], [0.2, 0.9, 0.5], "naive", 1, 0.9),
    ([A, B, A], [0.2, 0.9, 0.5], "weighted", 1, 0.9 / 1.6),  # b 0.9 beats a 0.7
    ([A, B, A], [0.2, 0.9, 0.5], "majority", 2, 2 / 3),  # a wins 2-1; its best path is 2
    ([None, "x", None], [0.9, 0.1, 0.8], "naive", 0, 0.9),
    ([None, "x", None], [0.9, 0.1, 0.8], "weighted", 1, 0.1 / 1.8),
    ([None, "x", None], [0.9, 0.1, 0.8], "majority", 1, 1 / 3),
    ([None, None], [0.3, 0.7], "majority", 1, 0.0),  # all None: best score, no confidence
    ([None, None], [0.3, 0.7], "weighted", 1, 0.0),
    ([A, B], [0.3, 0.6], "majority", 1, 0.5),  # 1-1 tie: the answer with the better path
    ([B, A], [0.6, 0.3], "majority", 0, 0.5),  # the same tie in the other order
    ([A, B, B, A], [0.4, 0.1, 0.2, 0.1], "majority", 0, 0.5),  # tie, a's best 0.4 > b's 0.2
    ([A, B], [-1.0, 0.5], "weighted", 1, 1.0),  # negative scores carry no weight
    ([A, B], [0.0, 0.0], "weighted", 0, 0.0),  # no mass at all
    ([A], [1.7], "naive", 0, 1.0),  # confidence is clipped to [0, 1]
    ([], [], "majority", -1, 0.0),
]


@pytest.mark.parametrize(("answers", "scores", "how", "index", "confidence"), TABLE)
def test_vote_table(answers, scores, how: str, index: int, confidence: float) -> None:
    got_index, got_confidence = vote(answers, scores, how)
    assert got_index == index
    assert got_confidence == pytest.approx(confidence, abs=1e-12)

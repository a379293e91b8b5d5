"""The suspect-step bench's scoring: a pick hits when it is the first wrong step."""

from __future__ import annotations

from bench.suspect import hit_rates
from models.search.tree import ThoughtTree


def test_each_rule_is_scored_against_the_first_wrong_step() -> None:
    tree = ThoughtTree(prompt_token_ids=[1])
    a = tree.add(tree.root, text="read 140", prm_score=0.9)
    b = tree.add(a, text="140 - 99 = 41", prm_score=0.2)
    c = tree.add(b, text="answer 41", prm_score=0.1, terminal=True)
    row = {"tree": tree, "path": tree.path(c), "good": set(), "first_wrong": 2}
    rates = hit_rates([row, row | {"first_wrong": 3}])
    assert rates["largest_drop"]["hit_rate"] == 0.5  # step 2 (0.9 -> 0.2), right once
    assert rates["last_step"]["hit_rate"] == 0.5 and rates["lowest_value"]["hit_rate"] == 0.5
    assert rates["divergence"]["hit_rate"] == 0.0  # no right sibling: no pick
    assert all(v["n"] == 2 for v in rates.values())

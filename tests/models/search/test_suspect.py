"""The suspect-step rules on hand-built trees: each can point at a different step."""

from __future__ import annotations

import pytest

from domains.errors import PonderError
from models.search.suspect import SUSPECT_RULES, suspect_step
from models.search.tree import Node, ThoughtTree


def _tree() -> tuple[ThoughtTree, list[Node], Node]:
    """root -> a (0.9) -> b (0.4) -> c (0.3, wrong leaf); a -> d (0.8) -> e (right leaf)."""
    tree = ThoughtTree(prompt_token_ids=[1])
    a = tree.add(tree.root, text="read", prm_score=0.9)
    b = tree.add(a, text="convert", prm_score=0.4)
    c = tree.add(b, text="answer 7", prm_score=0.3, terminal=True)
    d = tree.add(a, text="convert again", prm_score=0.8)
    e = tree.add(d, text="answer 5", prm_score=0.7, terminal=True)
    return tree, tree.path(c), e


@pytest.mark.parametrize(
    ("rule", "good", "expected"),
    [
        ("last_step", False, "answer 7"),
        ("lowest_value", False, "answer 7"),
        ("largest_drop", False, "convert"),  # 0.9 -> 0.4 is the largest fall
        ("divergence", True, "convert"),  # where the chosen path left the right one
        ("divergence", False, None),  # nothing known to be right
        ("divergence_then_drop", False, "convert"),
        ("below_siblings", False, "convert"),  # 0.4 against its sibling's 0.8
        ("siblings_then_drop", False, "convert"),
        ("unlike_right", True, "answer 7"),  # the right path never states 7
        ("unlike_right", False, None),
        ("unlike_others", True, None),  # one other finished path: no majority to go by
        ("right_then_siblings", True, "answer 7"),
        ("right_then_siblings", False, "convert"),  # nothing right known: the siblings
    ],
)
def test_each_rule_points_at_its_step(rule: str, good: bool, expected: str | None) -> None:
    tree, path, right = _tree()
    found = suspect_step(tree, path, good={right.id} if good else None, rule=rule)
    assert (path[found.index].text if found else None) == expected
    assert found is None or found.reason


def test_the_first_step_falls_from_one() -> None:
    tree = ThoughtTree(prompt_token_ids=[1])
    a = tree.add(tree.root, text="misread", prm_score=0.2)
    b = tree.add(a, text="answer", prm_score=0.15, terminal=True)
    found = suspect_step(tree, tree.path(b), rule="largest_drop")
    assert found is not None and found.index == 0 and "1.00 to 0.20" in found.reason


def test_divergence_prefers_the_sibling_over_the_scores() -> None:
    """Scores blame step 1, but a right path shares step 1: the fork is at step 2."""
    tree = ThoughtTree(prompt_token_ids=[1])
    a = tree.add(tree.root, text="read", prm_score=0.1)
    b = tree.add(a, text="wrong sum", prm_score=0.1)
    c = tree.add(a, text="right sum", prm_score=0.1)
    found = suspect_step(tree, tree.path(b), good={c.id})
    assert found is not None and found.index == 1 and "sibling" in found.reason
    assert suspect_step(tree, tree.path(c), good={c.id}, rule="divergence") is None


def test_siblings_cancel_a_score_that_rises_with_depth() -> None:
    """Scores rise along both paths; the wrong step is the one below its sibling, not the
    first (which "falls from 1") nor the lowest."""
    tree = ThoughtTree(prompt_token_ids=[1])
    a = tree.add(tree.root, text="read", prm_score=0.5)
    b = tree.add(a, text="wrong units", prm_score=0.55)
    tree.add(a, text="right units", prm_score=0.65)
    c = tree.add(b, text="answer", prm_score=0.7, terminal=True)
    found = suspect_step(tree, tree.path(c), rule="siblings_then_drop")
    assert found is not None and found.index == 1 and "below its siblings" in found.reason
    assert suspect_step(tree, tree.path(c), rule="largest_drop").index == 0  # type: ignore[union-attr]
    chain = ThoughtTree(prompt_token_ids=[1])  # no siblings anywhere: the drop rule decides
    x = chain.add(chain.root, text="read", prm_score=0.9)
    y = chain.add(x, text="answer", prm_score=0.2, terminal=True)
    found = suspect_step(chain, chain.path(y), rule="siblings_then_drop")
    assert found is not None and found.index == 1


def test_unscored_paths_and_unknown_rules() -> None:
    tree = ThoughtTree(prompt_token_ids=[1])
    a = tree.add(tree.root, text="no score")
    assert suspect_step(tree, tree.path(a)) is None
    assert suspect_step(tree, []) is None
    with pytest.raises(PonderError) as err:
        suspect_step(tree, tree.path(a), rule="vibes")
    assert all(name in err.value.fix for name in SUSPECT_RULES)


def test_numbers_decide_where_the_path_left_the_right_ones() -> None:
    """A wrong unit conversion: the right paths state 1.75 (m), the chosen path 17.5. Its
    first step states only numbers the right paths state too."""
    tree = ThoughtTree(prompt_token_ids=[1])
    read = tree.add(tree.root, text="height 175 cm, weight 70 kg", prm_score=0.5)
    bad = tree.add(read, text="17.5 m", prm_score=0.6)
    end = tree.add(bad, text="BMI 0.0023", prm_score=0.7, terminal=True)
    good = tree.add(read, text="1.75 m", prm_score=0.6)
    ok1 = tree.add(good, text="BMI 22.9", prm_score=0.7, terminal=True)
    ok2 = tree.add(good, text="BMI 22.86", prm_score=0.7, terminal=True)
    found = suspect_step(tree, tree.path(end), good={ok1.id, ok2.id}, rule="unlike_right")
    assert found is not None and found.index == 1
    found = suspect_step(tree, tree.path(end), rule="unlike_others")
    assert found is not None and found.index == 1, "17.5 stated alone; 1.75 by most"


def test_a_path_above_its_siblings_blames_the_step_that_leads_them_least() -> None:
    tree = ThoughtTree(prompt_token_ids=[1])
    a = tree.add(tree.root, text="first", prm_score=0.9)
    tree.add(tree.root, text="other first", prm_score=0.2)
    b = tree.add(a, text="second", prm_score=0.6)
    tree.add(a, text="other second", prm_score=0.5)
    end = tree.add(b, text="answer", prm_score=0.7, terminal=True)
    found = suspect_step(tree, tree.path(end), rule="below_siblings")
    assert found is not None and found.index == 1 and "least above" in found.reason

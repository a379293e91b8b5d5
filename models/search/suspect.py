"""Which step of a wrong path a reviewer should look at first: the suspect step.

A reviewer of a wrong answer wants the step where the reasoning went wrong, not the whole
tree. Every rule here has one signature, ``(tree, path, good) -> Suspect | None``, and is
picked by name from ``SUSPECT_RULES`` (like the search strategies):

- ``path`` is the chosen path, root excluded, as ``ThoughtTree.path`` returns it;
- ``good`` holds the ids of leaves known to reach the right answer (by the expected answer
  where the case has one); it is empty when nothing is known.

The rule ponder uses is ``SUSPECT_RULE``, ``right_then_siblings``: where a path reached the
right answer, the chosen path's first step that states a number no right path states
(``unlike_right``); otherwise the step the PRM ranks lowest against the steps the search
tried beside it from the same prefix (``below_siblings``); otherwise the largest fall in
PRM score. Siblings sit at the same depth, so they cancel the learned PRM's drift: on the
loop benchmark's trees its scores rose with depth along every path, right or wrong, so
"the largest fall" (from 1 at step 1) always blamed step 1. ``bench/suspect.py`` measures
every rule against the first wrong step found by comparison with the reference solution,
with "the last step" and "the lowest-value step" as the naive baselines. On a fresh
bench-loop run's 20 wrong multi-step paths (beam and MCTS, N=4; in-sample, the rules were
compared there): 70.0% [50, 90] against 10.0% for the previous rule (``divergence_then_drop``)
and 10.0% / 10.0% for the baselines. Out of sample (``--fresh-seed 4``, only 6 wrong paths):
33.3% [0, 66.7], where ``right_then_others`` scored 66.7% and the baselines 0.0% / 16.7%.
Out of sample again on 30 new cases (``--fresh-seed 5 --fresh-per-cell 10``, 14 wrong
paths): 78.6% [57.1, 100], tied with ``right_then_others``; baselines 7.1% / 0.0%.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from domains.errors import PonderError
from models.search.tree import Node, ThoughtTree


class Suspect(NamedTuple):
    """A rule's pick: the index of the step in the path, and why, in a reviewer's words."""

    index: int
    reason: str


Rule = Callable[[ThoughtTree, list[Node], set[int]], Suspect | None]


def last_step(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """Baseline: blame the last step."""
    return Suspect(len(path) - 1, "the last step") if path else None


def lowest_value(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """Baseline: the step with the lowest PRM score (the first such step on ties)."""
    scores = _scores(path)
    if scores is None:
        return None
    low = min(scores)
    return Suspect(scores.index(low), f"the lowest PRM score on the path ({low:.2f})")


def largest_drop(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """The step whose PRM score fell most from the previous step's (the first from 1)."""
    scores = _scores(path)
    if scores is None:
        return None
    before = [1.0, *scores]
    drops = [b - a for b, a in zip(before, scores, strict=False)]
    k = drops.index(max(drops))
    return Suspect(k, f"the largest fall in PRM score ({before[k]:.2f} to {scores[k]:.2f})")


def divergence(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """The first step of the chosen path that no path to a right answer shares; None when
    no other path is known to be right, or when the chosen path is one of them."""
    if not good or not path or path[-1].id in good:
        return None
    on_good = {n.id for leaf in good for n in tree.path(tree.nodes[leaf])}
    for k, node in enumerate(path):
        if node.id not in on_good:
            return Suspect(k, "here the path left a sibling path that reached the right answer")
    return None


def divergence_then_drop(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """``divergence`` where a sibling path reached the right answer, else ``largest_drop``."""
    return divergence(tree, path, good) or largest_drop(tree, path, good)


def below_siblings(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """The step whose PRM score falls furthest below the mean of its siblings (the other
    steps tried from the same prefix), or where every step beats its siblings, the one that
    beats them least; None when no step of the path has a scored sibling. (Only steps
    below their siblings scored 35% on the loop's trees against 60% for this ranking.)
    Siblings share the prefix and the depth, so a PRM whose scores drift with depth (the
    loop benchmark's rise along every path, right or wrong) compares like with like."""
    kids: dict[int, list[Node]] = {}
    for n in tree.nodes:
        if n.parent is not None and n.prm_score is not None:
            kids.setdefault(n.parent, []).append(n)
    best: tuple[float, int, float] | None = None
    for k, node in enumerate(path):
        siblings = kids.get(node.parent if node.parent is not None else -1, [])
        others = [m.prm_score for m in siblings if m.id != node.id]
        if node.prm_score is None or not others:
            continue
        mean = sum(others) / len(others)  # type: ignore[arg-type]
        if best is None or mean - node.prm_score > best[0]:
            best = (mean - node.prm_score, k, mean)
    if best is None:
        return None
    gap, k, mean = best
    if gap > 0:
        return Suspect(k, f"the PRM scores this step {gap:.2f} below its siblings' {mean:.2f}")
    return Suspect(k, f"of this path's steps, the PRM ranks this one least above its "
                      f"siblings ({mean - gap:.2f} against {mean:.2f})")  # fmt: skip


def siblings_then_drop(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """``below_siblings`` where the tree tried other steps, else ``divergence_then_drop``."""
    return below_siblings(tree, path, good) or divergence_then_drop(tree, path, good)


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _numbers(text: str) -> set[str]:
    """The numbers a step states, normalised (``70.0`` and ``70`` are one number)."""
    return {f"{float(n):g}" for n in NUMBER.findall(text)}


def unlike_right(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """The first step that states a number no path to a right answer states: where the
    chosen path left the right paths' arithmetic (a wrong unit conversion, a misread
    value). None when no right path is known, or the chosen path is one."""
    if not good or not path or path[-1].id in good:
        return None
    right = set().union(*(_numbers(tree.text(tree.nodes[leaf])) for leaf in good))
    for k, node in enumerate(path):
        if _numbers(node.text) - right:
            return Suspect(k, "here the path states a number no path to the right answer states")
    return None


def unlike_others(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """The first step that states a number most other finished paths do not (step-level
    self-consistency, for trees where no path is known to be right). None with fewer than
    two other finished paths."""
    others = [leaf for leaf in tree.leaves() if leaf.terminal and (not path or leaf != path[-1])]
    if len(others) < 2 or not path:
        return None
    stated = [_numbers(tree.text(leaf)) for leaf in others]
    for k, node in enumerate(path):
        lonely = [n for n in _numbers(node.text) if sum(n in s for s in stated) < len(stated) / 2]
        if lonely:
            return Suspect(k, "here the path states a number most other paths do not")
    return None


def right_then_siblings(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """``unlike_right`` where a path reached the right answer, else ``siblings_then_drop``."""
    return unlike_right(tree, path, good) or siblings_then_drop(tree, path, good)


def right_then_others(tree: ThoughtTree, path: list[Node], good: set[int]) -> Suspect | None:
    """``unlike_right``, else ``unlike_others``, else ``siblings_then_drop``."""
    return (
        unlike_right(tree, path, good)
        or unlike_others(tree, path, good)
        or siblings_then_drop(tree, path, good)
    )


def _scores(path: list[Node]) -> list[float] | None:
    """The path's PRM scores, or None when any step has none (nothing to rank by)."""
    scores = [n.prm_score for n in path]
    if not scores or any(s is None for s in scores):
        return None
    return [float(s) for s in scores]  # type: ignore[arg-type]


SUSPECT_RULES: dict[str, Rule] = {
    "right_then_others": right_then_others,
    "right_then_siblings": right_then_siblings,
    "unlike_right": unlike_right,
    "unlike_others": unlike_others,
    "siblings_then_drop": siblings_then_drop,
    "below_siblings": below_siblings,
    "divergence_then_drop": divergence_then_drop,
    "largest_drop": largest_drop,
    "divergence": divergence,
    "lowest_value": lowest_value,
    "last_step": last_step,
}
SUSPECT_RULE = "right_then_siblings"  # chosen by bench/suspect.py; see the module docstring


def suspect_step(
    tree: ThoughtTree, path: list[Node], *, good: set[int] | None = None, rule: str = SUSPECT_RULE
) -> Suspect | None:
    """The step a reviewer should check first on ``path`` (an index into it), by ``rule``;
    None when the rule has nothing to go on (no scores, an empty path, no right sibling)."""
    if rule not in SUSPECT_RULES:
        raise PonderError(
            "suspect_rule", f"unknown rule {rule!r}", f"use one of: {', '.join(SUSPECT_RULES)}"
        )
    return SUSPECT_RULES[rule](tree, path, good or set())

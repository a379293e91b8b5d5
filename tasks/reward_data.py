"""Training data for the reward models: preference pairs and per-step targets.

Pairs come from three sources, each recorded on the pair and weighted by config:
``explicit`` (reviewers' preferences), ``rating`` (two completions of one case rated
differently; the gap becomes the Bradley-Terry margin) and ``verifier`` (a correct and an
incorrect completion of one labelled case, from stored thought trees; the case's reference
solution stands in for a correct completion when no rollout was correct).

Step targets come from reviewers (``first_wrong_step`` / ``step_labels``), from
Math-Shepherd Monte-Carlo rollouts over stored tree paths, and from TD(lambda) blending of
those returns with the next step's value estimate (``models.prm``).

A completion is referenced by an MLflow trace id (its spans are the steps), by
``<case_id>#<node_id>`` (a leaf of a stored tree), or given as literal text.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import polars as pl

from domains.base import Case, Domain
from models.reward import split_steps
from models.search.tree import ThoughtTree

Pair = dict[str, Any]
PAIR_SOURCES = ("explicit", "rating", "verifier")
STEP_SOURCES = ("reviewer", "monte_carlo")


def tree_completions(trees: dict[str, ThoughtTree]) -> dict[str, list[str]]:
    """``case#leaf`` -> step texts, for every leaf path of every stored tree."""
    out = {}
    for case_id, tree in trees.items():
        for leaf in tree.leaves():
            out[f"{case_id}#{leaf.id}"] = [n.text for n in tree.path(leaf)]
    return out


def trace_completions(trace_ids: Iterable[str]) -> dict[str, list[str]]:
    """trace id -> step texts (the ``step k`` spans' outputs, in order)."""
    import mlflow

    out = {}
    for tid in set(trace_ids):
        try:
            trace = mlflow.get_trace(tid)
        except Exception:  # noqa: BLE001 - an unknown trace is reported by the caller
            trace = None
        if trace is None:
            continue
        spans = [s for s in trace.data.spans if s.name.startswith("step ")]
        spans.sort(key=lambda s: int(s.name.split()[1]))
        out[tid] = [(s.outputs or {}).get("text", "") for s in spans]
    return out


def resolve(ref: str | None, index: dict[str, list[str]], literal: bool) -> list[str] | None:
    """Steps of a referenced completion; literal text is split into steps when allowed."""
    if ref is None:
        return None
    if ref in index:
        return index[ref]
    return split_steps(ref) if literal and ref.strip() else None


def _pair(case: Case, chosen: list[str], rejected: list[str], source: str, margin: float) -> Pair:
    return {
        "case_id": case.id,
        "family": case.family,
        "chosen": "".join(chosen),
        "rejected": "".join(rejected),
        "source": source,
        "margin": float(margin),
    }


def explicit_pairs(
    feedback: pl.DataFrame, cases: dict[str, Case], index: dict[str, list[str]]
) -> tuple[list[Pair], list[dict[str, str]]]:
    """Reviewer preferences; chosen/rejected are completion ids or literal texts."""
    pairs, bad = [], []
    for row in feedback.filter(pl.col("kind") == "preference").iter_rows(named=True):
        case = cases.get(row["case_id"])
        chosen = resolve(row["chosen"], index, literal=True)
        rejected = resolve(row["rejected"], index, literal=True)
        if case is None:
            bad.append(rejection(row, "case_id is not in the cases dataset; collect the case"))
        elif not chosen or not rejected:
            bad.append(rejection(row, "chosen/rejected resolve to no completion text"))
        else:
            pairs.append(_pair(case, chosen, rejected, "explicit", 0.0))
    return pairs, bad


def rating_pairs(
    feedback: pl.DataFrame,
    cases: dict[str, Case],
    index: dict[str, list[str]],
    margin_per_point: float,
) -> tuple[list[Pair], list[dict[str, str]]]:
    """Pairs from completions of one case with different mean ratings (thumbs up = 5,
    down = 1); margin = rating gap x ``margin_per_point``."""
    rated = feedback.filter(pl.col("kind").is_in(["rating", "thumbs"])).with_columns(
        pl.when(pl.col("kind") == "thumbs")
        .then(pl.when(pl.col("thumbs")).then(5).otherwise(1))
        .otherwise(pl.col("rating"))
        .cast(pl.Float64)
        .alias("r")
    )
    bad = [
        rejection(r, "trace_id resolves to no completion (unknown trace or tree leaf)")
        for r in rated.iter_rows(named=True)
        if r["trace_id"] not in index
    ]
    means = (
        rated.filter(pl.col("trace_id").is_in(list(index)))
        .group_by("case_id", "trace_id")
        .agg(pl.col("r").mean())
        .sort("case_id", "trace_id")
    )
    pairs = []
    for (case_id,), grp in means.group_by("case_id", maintain_order=True):
        case = cases.get(case_id)
        if case is None:
            bad += [rejection({"case_id": case_id}, "case_id is not in the cases dataset")]
            continue
        for a, b in itertools.combinations(grp.iter_rows(named=True), 2):
            if a["r"] == b["r"]:
                continue
            hi, lo = (a, b) if a["r"] > b["r"] else (b, a)
            gap = (hi["r"] - lo["r"]) * margin_per_point
            pairs.append(_pair(case, index[hi["trace_id"]], index[lo["trace_id"]], "rating", gap))
    return pairs, bad


def verifier_pairs(
    domain: Domain,
    cases: dict[str, Case],
    trees: dict[str, ThoughtTree],
    per_case: int,
    *,
    use_reference: bool,
    seed: int = 0,
) -> list[Pair]:
    """Correct vs incorrect completions of each labelled case, from its stored tree."""
    rng = random.Random(seed)
    pairs = []
    for case_id, tree in sorted(trees.items()):
        case = cases.get(case_id)
        if case is None or case.truth is None:
            continue
        good, wrong = _split_leaves(domain, case, tree)
        if not good and use_reference and case.reference:
            good = [split_steps(case.reference)]
        combos = [(g, w) for g in good for w in wrong]
        rng.shuffle(combos)
        pairs += [_pair(case, g, w, "verifier", 0.0) for g, w in combos[:per_case]]
    return pairs


def _split_leaves(
    domain: Domain, case: Case, tree: ThoughtTree
) -> tuple[list[list[str]], list[list[str]]]:
    good, wrong = [], []
    for leaf in tree.leaves():
        steps = [n.text for n in tree.path(leaf)]
        (good if domain.check("".join(steps), case).correct else wrong).append(steps)
    return good, wrong


def rejection(row: dict[str, Any], reason: str) -> dict[str, str]:
    return {"reason": reason, "raw": json.dumps(row, default=str)[:2000]}


def resolve_contradictions(pairs: list[Pair]) -> tuple[list[Pair], list[dict[str, str]]]:
    """Pairs on the same two completions that disagree: the majority direction (by count)
    is kept; on a tie every pair of that group is set aside as contradictory."""
    groups: dict[tuple[str, str, str], list[Pair]] = {}
    for p in pairs:
        key = (p["case_id"], *sorted((p["chosen"], p["rejected"])))
        groups.setdefault(key, []).append(p)
    kept, bad = [], []
    for (_, first, _), grp in groups.items():
        forward = [p for p in grp if p["chosen"] == first]
        backward = [p for p in grp if p["chosen"] != first]
        if forward and backward and len(forward) == len(backward):
            bad += [rejection(p, "contradictory preferences (tie); ask reviewers") for p in grp]
            continue
        win, lose = (forward, backward) if len(forward) > len(backward) else (backward, forward)
        kept += win
        bad += [rejection(p, "outvoted by the opposite preference on the same pair") for p in lose]
    return kept, bad


def weighted(pairs: list[Pair], weights: dict[str, float], seed: int) -> list[Pair]:
    """Resample pairs so each source counts by its weight: a pair appears floor(w) times,
    plus once more with probability frac(w). TRL's RewardTrainer has no sample weights."""
    rng = random.Random(seed)
    out = []
    for p in pairs:
        w = weights.get(p["source"], 1.0)
        copies = int(w) + (1 if rng.random() < w - int(w) else 0)
        out += [p] * copies
    rng.shuffle(out)
    return out


def reviewer_steps(
    feedback: pl.DataFrame, cases: dict[str, Case], index: dict[str, list[str]]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Step targets from ``first_wrong_step`` (steps before it 1, from it on 0; 0 = none
    wrong) and ``step_labels`` ("1101"), one path per trace. Rules, each recorded:

    - a reviewer's newest labels on a trace replace that reviewer's older ones;
    - reviewers who disagree on a trace are merged step by step, and a step any of them
      calls wrong is wrong (a step one person doubts is not taught as right)."""
    rows, bad = [], []
    kinds = feedback.filter(pl.col("kind").is_in(["first_wrong_step", "step_labels"]))
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in kinds.sort("timestamp", nulls_last=False).iter_rows(named=True):
        key = (row["trace_id"], row["reviewer_id"])
        if key in newest:
            bad.append(rejection(newest[key], "replaced by the same reviewer's newer labels"))
        newest[key] = row
    by_trace: dict[str, list[tuple[dict[str, Any], list[float]]]] = {}
    for row in newest.values():
        steps = index.get(row["trace_id"])
        if cases.get(row["case_id"]) is None or not steps:
            bad.append(rejection(row, "case or trace_id resolves to no completion"))
            continue
        labels = _labels(row, len(steps))
        if labels is None:
            bad.append(rejection(row, f"labels do not match the completion's {len(steps)} steps"))
            continue
        by_trace.setdefault(row["trace_id"], []).append((row, labels))
    for trace_id, labelled in by_trace.items():
        merged = [min(step) for step in zip(*(labels for _, labels in labelled), strict=True)]
        if any(labels != merged for _, labels in labelled):
            reason = "reviewers disagree: merged, a step any reviewer calls wrong is wrong"
            bad += [rejection(row, reason) for row, _ in labelled]
        case = cases[labelled[0][0]["case_id"]]
        rows.append(step_row(case, index[trace_id], merged, "reviewer"))
    return rows, bad


def _labels(row: dict[str, Any], n: int) -> list[float] | None:
    if row["kind"] == "step_labels":
        digits = [float(c) for c in row["step_labels"]]
        return digits if len(digits) == n else None
    k = row["first_wrong_step"]
    if k > n:
        return None
    return [1.0] * n if k == 0 else [1.0 if i < k - 1 else 0.0 for i in range(n)]


def step_row(case: Case, steps: list[str], targets: list[float], source: str) -> dict[str, Any]:
    return {
        "case_id": case.id,
        "family": case.family,
        "steps": steps,
        "targets": targets,
        "source": source,
    }


def tree_paths(
    trees: dict[str, ThoughtTree], cases: dict[str, Case], per_case: int, seed: int
) -> list[tuple[str, ThoughtTree, list[int]]]:
    """Up to ``per_case`` leaf paths (node ids) per labelled case, for MC labelling."""
    rng = random.Random(seed)
    out = []
    for case_id, tree in sorted(trees.items()):
        if case_id not in cases or cases[case_id].truth is None:
            continue
        leaves = tree.leaves()
        rng.shuffle(leaves)
        out += [(case_id, tree, [n.id for n in tree.path(leaf)]) for leaf in leaves[:per_case]]
    return out


def mc_targets(
    paths: Sequence[tuple[str, ThoughtTree, list[int]]],
    cases: dict[str, Case],
    domain: Domain,
    rollout: Callable[[list[list[int]], Callable[[int, str], bool]], list[float]],
) -> dict[tuple[str, int], float]:
    """Math-Shepherd returns for every distinct (case, node) on the given paths: inner
    nodes by rollouts from their prefix (one batched call), leaves by their verdict."""
    inner: dict[tuple[str, int], tuple[ThoughtTree, int]] = {}
    out: dict[tuple[str, int], float] = {}
    for case_id, tree, ids in paths:
        leaf = tree.nodes[ids[-1]]
        out[(case_id, leaf.id)] = float(domain.check(tree.text(leaf), cases[case_id]).correct)
        for nid in ids[:-1]:
            inner[(case_id, nid)] = (tree, nid)
    keys = sorted(inner)
    prefixes = [inner[k][0].token_ids(inner[k][0].nodes[k[1]]) for k in keys]

    def judge(i: int, completion: str) -> bool:
        tree, nid = inner[keys[i]]
        return domain.check(tree.text(tree.nodes[nid]) + completion, cases[keys[i][0]]).correct

    out.update(zip(keys, rollout(prefixes, judge), strict=True))
    return out

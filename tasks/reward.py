"""Prefect tasks of the reward refresh: build data, train, evaluate, register, gate.

Data flows between tasks as lake versions and model directories, never tensors. The
held-out set is the pairs and steps of cases outside the ``train`` split; the challenger
and the current champion are scored on the same held-out texts, each with its own
tokenizer, so the promotion gate compares like with like.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from domains.base import Case, Domain
from models.prm import ProcessRM, auroc, mc_step_returns, step_rows, tree_td_targets
from models.reward import OutcomeRM, encode_segments
from models.search.tree import ThoughtTree
from tasks import reward_data as rd
from tasks.context import StageContext
from tasks.infer import row_case
from tasks.lake import row_hash
from tasks.report import load_trees

log = logging.getLogger(__name__)


@dataclass
class RewardData:
    """Everything the refresh trains and evaluates on, with what was set aside and why."""

    pairs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def load_cases(ctx: StageContext) -> tuple[dict[str, Case], dict[str, str]]:
    """All collected cases by id, and each case's split."""
    lake, domain = ctx.lake, ctx.name
    if lake.latest(domain, "cases") is None:
        return {}, {}
    rows = lake.scan(domain, "cases").collect().iter_rows(named=True)
    cases, splits = {}, {}
    for r in rows:
        cases[r["id"]] = row_case(r)
        splits[r["id"]] = r["split"]
    return cases, splits


def load_feedback(ctx: StageContext) -> pl.DataFrame:
    """Every feedback row of the latest version (empty before the first)."""
    latest = ctx.lake.latest(ctx.name, "feedback")
    return ctx.lake.scan(ctx.name, "feedback").collect() if latest else pl.DataFrame()


def load_all_trees(ctx: StageContext, *, limit: int = 20) -> dict[str, ThoughtTree]:
    """Stored thought trees of the newest ``limit`` predictions versions (newest wins)."""
    lake, domain = ctx.lake, ctx.name
    trees: dict[str, ThoughtTree] = {}
    for version in lake.versions(domain, "predictions")[-limit:]:
        path = lake.info(domain, "predictions", version).path / "trees.parquet"
        if path.is_file():
            trees.update(load_trees(pl.read_parquet(path)))
    return trees


class RewardInputs(NamedTuple):
    """What both builders read: the domain, its cases, reviewer feedback, stored thought
    trees, and the index from a trace or tree leaf to its completion text (a named tuple,
    so a builder unpacks it in one line)."""

    domain: Domain
    cases: dict[str, Case]
    feedback: pl.DataFrame
    trees: dict[str, ThoughtTree]
    index: dict[str, list[str]]


@task(cache_policy=NO_CACHE)
def build_pairs(
    inputs: RewardInputs, *, margin_per_point: float, per_case: int, use_reference: bool
) -> RewardData:
    """Pairs from all three sources, contradictions resolved, with counts per source."""
    domain, cases, feedback, trees, index = inputs
    out = RewardData()
    if feedback.height:
        for pairs, bad in (
            rd.explicit_pairs(feedback, cases, index),
            rd.rating_pairs(feedback, cases, index, margin_per_point),
        ):
            out.pairs += pairs
            out.rejected += bad
    out.pairs += rd.verifier_pairs(domain, cases, trees, per_case, use_reference=use_reference)
    out.pairs, bad = rd.resolve_contradictions(out.pairs)
    out.rejected += bad
    out.counts["contradictory"] = len(bad)
    for src in rd.PAIR_SOURCES:
        out.counts[f"pairs_{src}"] = sum(p["source"] == src for p in out.pairs)
    return out


@task(cache_policy=NO_CACHE)
def build_steps(
    inputs: RewardInputs,
    *,
    generator: Any,
    sampling: Any,
    rollouts: int,
    paths_per_case: int,
    lam: float,
    value_model: ProcessRM | None,
) -> RewardData:
    """Reviewer step labels plus Math-Shepherd MC returns blended by TD(lambda)."""
    domain, cases, feedback, trees, index = inputs
    out = RewardData()
    if feedback.height:
        out.steps, out.rejected = rd.reviewer_steps(feedback, cases, index)
    paths = rd.tree_paths(trees, cases, paths_per_case, seed=0)
    if paths and generator is not None and rollouts > 0:
        mc = rd.mc_targets(
            paths,
            cases,
            domain,
            lambda prefixes, judge: mc_step_returns(generator, prefixes, rollouts, sampling, judge),
        )
        out.steps += _td_rows(paths, cases, mc, lam, value_model=value_model, domain=domain)
    for src in rd.STEP_SOURCES:
        out.counts[f"step_paths_{src}"] = sum(s["source"] == src for s in out.steps)
    return out


def _td_rows(
    paths: list[tuple[str, ThoughtTree, list[int]]],
    cases: dict[str, Case],
    mc: dict[tuple[str, int], float],
    lam: float,
    *,
    value_model: ProcessRM | None,
    domain: Domain,
) -> list[dict[str, Any]]:
    by_case: dict[str, list[tuple[ThoughtTree, list[int]]]] = {}
    for case_id, tree, ids in paths:
        by_case.setdefault(case_id, []).append((tree, ids))
    rows = []
    for case_id, group in by_case.items():
        tree = group[0][0]
        case_mc = {nid: v for (cid, nid), v in mc.items() if cid == case_id}
        values = _current_values(value_model, domain, cases[case_id], tree, list(case_mc))
        kids = {n.id: [c.id for c in tree.children(n)] for n in tree.nodes}
        targets = tree_td_targets(kids, case_mc, values, lam)
        for _, ids in group:
            steps = [tree.nodes[i].text for i in ids]
            rows.append(
                rd.step_row(cases[case_id], steps, [targets[i] for i in ids], "monte_carlo")
            )
    return rows


def _current_values(
    model: ProcessRM | None, domain: Domain, case: Case, tree: ThoughtTree, node_ids: list[int]
) -> dict[int, float] | None:
    """The champion PRM's value of each node (the 'next step's estimated value')."""
    if model is None:
        return None
    msgs = domain.prompt(case)
    rows = [model.encode(msgs, [n.text for n in tree.path(tree.nodes[i])]) for i in node_ids]
    return {i: v[-1] for i, v in zip(node_ids, model.values(rows), strict=True) if v}


def tokenize_pairs(
    tokenizer: Any, domain: Domain, cases: dict[str, Case], pairs: list[dict], max_length: int
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """TRL rows (chosen_ids, rejected_ids, margin); pairs over ``max_length`` are returned
    separately with a reason, never dropped silently."""
    rows, long = [], []
    for p in pairs:
        msgs = domain.prompt(cases[p["case_id"]])
        chosen = encode_segments(tokenizer, msgs, [p["chosen"]])[0]
        rejected = encode_segments(tokenizer, msgs, [p["rejected"]])[0]
        if max(len(chosen), len(rejected)) > max_length:
            n = max(len(chosen), len(rejected))
            long.append(rd.rejection(p, f"pair is {n} tokens > max_length {max_length}"))
            continue
        rows.append({**p, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows, long


def tokenize_steps(
    tokenizer: Any, domain: Domain, cases: dict[str, Case], steps: list[dict], max_length: int
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    items = [(domain.prompt(cases[s["case_id"]]), s["steps"], s["targets"]) for s in steps]
    rows, long = [], []
    for s, row in zip(steps, step_rows(tokenizer, items), strict=True):
        if len(row["input_ids"]) > max_length:
            n = len(row["input_ids"])
            long.append(rd.rejection(s, f"step path is {n} tokens > max_length {max_length}"))
        else:
            rows.append({**s, **row})
    return rows, long


def orm_metrics(
    model_dir: Path, domain: Domain, cases: dict[str, Case], pairs: list[dict]
) -> dict[str, Any]:
    """Held-out pairwise accuracy, overall and by family, plus the raw scores."""
    rm = OutcomeRM(model_dir)
    seqs = []
    for p in pairs:
        msgs = domain.prompt(cases[p["case_id"]])
        seqs += [rm.encode(msgs, p["chosen"]), rm.encode(msgs, p["rejected"])]
    scores = rm.raw_scores(seqs)
    chosen, rejected = scores[0::2], scores[1::2]
    wins = [c > r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "accuracy": _mean(wins),
        "by_family": _by_family([p["family"] for p in pairs], wins),
        "chosen": chosen,
        "rejected": rejected,
    }


def prm_metrics(
    model_dir: Path, domain: Domain, cases: dict[str, Case], steps: list[dict]
) -> dict[str, Any]:
    """Held-out step AUROC (label: target >= 0.5), overall and by family."""
    rm = ProcessRM(model_dir)
    rows = [rm.encode(domain.prompt(cases[s["case_id"]]), s["steps"]) for s in steps]
    values = rm.values(rows)
    labels, preds, fams, targets = [], [], [], []
    for s, v in zip(steps, values, strict=True):
        labels += [int(t >= 0.5) for t in s["targets"]]
        targets += list(s["targets"])
        preds += v
        fams += [s["family"]] * len(v)
    by_family = {}
    for fam in sorted(set(fams)):
        idx = [i for i, f in enumerate(fams) if f == fam]
        by_family[fam] = auroc([labels[i] for i in idx], [preds[i] for i in idx])
    return {
        "auroc": auroc(labels, preds),
        "by_family": by_family,
        "pred": preds,
        "target": targets,
    }


def _mean(xs: list[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _by_family(fams: list[str], wins: list[bool]) -> dict[str, float | None]:
    return {
        f: _mean([w for w, g in zip(wins, fams, strict=True) if g == f]) for f in sorted(set(fams))
    }


def gate(
    challenger: float | None,
    champion: float | None,
    by_family: tuple[dict[str, float | None], dict[str, float | None]],
    margin: float,
    *,
    tolerance: float,
    floor: float,
) -> tuple[bool, str]:
    """Promote only if the challenger beats the champion by ``margin`` (or, with no
    champion, clears ``floor``) and no family drops by more than ``tolerance``."""
    if challenger is None:
        return False, (
            "no held-out metric: no held-out examples, or (PRM) all held-out step labels are "
            "one class so AUROC is undefined; collect more varied feedback or cases"
        )
    if champion is None:
        ok = challenger >= floor
        return ok, f"no champion; challenger {challenger:.3f} {'>=' if ok else '<'} floor {floor}"
    if challenger < champion + margin:
        return False, f"challenger {challenger:.3f} < champion {champion:.3f} + margin {margin}"
    new, old = by_family
    for fam, before in old.items():
        after = new.get(fam)
        if before is not None and after is not None and after < before - tolerance:
            return False, f"family {fam} regressed {before:.3f} -> {after:.3f} (> {tolerance})"
    return True, f"challenger {challenger:.3f} beats champion {champion:.3f} by >= {margin}"


def rejected_frame(rows: list[dict[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"reason": pl.String, "raw": pl.String})


def pairs_frame(pairs: list[dict[str, Any]]) -> pl.DataFrame:
    keep = ("case_id", "family", "chosen", "rejected", "source", "margin")
    frame = pl.DataFrame([{k: p[k] for k in keep} for p in pairs])
    return frame.with_columns(row_hash(list(keep)))


def steps_frame(steps: list[dict[str, Any]]) -> pl.DataFrame:
    keep = ("case_id", "family", "source")
    rows = [
        {**{k: s[k] for k in keep}, "steps": json.dumps(s["steps"]), "targets": s["targets"]}
        for s in steps
    ]
    return pl.DataFrame(rows).with_columns(row_hash([*keep, "steps"]))


def heldout(rows: list[dict[str, Any]], splits: dict[str, str]) -> tuple[list, list]:
    """(train, held-out) by the case's split: only ``train`` cases train."""
    train = [r for r in rows if splits.get(r["case_id"], "train") == "train"]
    rest = [r for r in rows if splits.get(r["case_id"], "train") != "train"]
    return train, rest


def plot_orm(metrics: dict[str, Any], path: Path) -> Path:
    """Histogram of held-out ORM scores, chosen vs rejected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(metrics["chosen"], bins=30, alpha=0.6, label="chosen")
    ax.hist(metrics["rejected"], bins=30, alpha=0.6, label="rejected")
    ax.set_xlabel("ORM score (logit)")
    ax.set_ylabel("held-out completions")
    ax.set_title(f"ORM held-out pairwise accuracy {metrics['accuracy']:.3f}")
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_prm(metrics: dict[str, Any], path: Path, bins: int = 10) -> Path:
    """Calibration curve of held-out PRM step values against their targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pl.DataFrame({"pred": metrics["pred"], "target": metrics["target"]})
    curve = (
        frame.with_columns((pl.col("pred") * bins).floor().clip(0, bins - 1).alias("bin"))
        .group_by("bin")
        .agg(pl.col("pred").mean(), pl.col("target").mean(), pl.len())
        .sort("bin")
    )
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot(curve["pred"], curve["target"], marker="o", label="PRM")
    ax.set_xlabel("predicted step value")
    ax.set_ylabel("mean target")
    auc = metrics["auroc"]
    ax.set_title(f"PRM calibration (AUROC {auc:.3f})" if auc is not None else "PRM calibration")
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def champion_dir(name: str) -> Path | None:
    """Local copy of ``name@champion``, or None when there is no champion yet."""
    from domains.errors import PonderError
    from models.registry import download_model

    try:
        return download_model(f"models:/{name}@champion")
    except PonderError:
        return None


def record_decision(
    name: str, version: str, promote_it: bool, reason: str, metrics: dict[str, Any]
) -> str | None:
    """Version tags with the decision and metrics; promote when the gate passed."""
    from models.registry import connect, promote, set_version_tags

    client = connect()
    tags = {
        "ponder.gate.decision": "promoted" if promote_it else "kept_challenger",
        "ponder.gate.reason": reason,
        **{f"ponder.metric.{k}": json.dumps(v) for k, v in metrics.items()},
    }
    set_version_tags(client, name, version, tags)
    return promote(name, version, client) if promote_it else None

"""How often the report's suspect-step flag points at the step that went wrong.

``python -m bench.suspect`` reads the thought trees a ``make bench-loop`` run stored (its
home, ``.ponder/bench/loop/home`` by default) and keeps the wrong answers on held-out and
search cases (never the training cases' rollouts) whose chosen path has more than one step.
For each, the first wrong step is found by comparison with the reference solution
(``bench.loop.first_wrong_step``: the first step that states a number the reference does
not). Every rule in ``models.search.suspect.SUSPECT_RULES`` then picks a step, and the
bench prints each rule's hit rate with a 95% bootstrap CI, per strategy and overall, next to
the naive baselines (the last step, the lowest-value step). Goal (issue 22): the chosen
rule at least 70%, and above both baselines. Writes ``suspect.json`` in ``--out``.

The rules were compared on those trees, so that figure is in-sample. ``--fresh-seed 4``
measures out of sample: it collects new cases of the suite with that seed into the loop's
lake, searches them with beam and mcts (the learned PRM, N = 4) with the policy champion,
and counts only their paths (``suspect-seed4.json``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

OUT = Console(highlight=False, markup=False)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", type=Path, default=Path(".ponder/bench/loop/home"))
    ap.add_argument("--domain", default="medicine")
    ap.add_argument("--out", type=Path, default=Path(".ponder/bench/suspect"))
    ap.add_argument(
        "--fresh-seed",
        type=int,
        help="out of sample: collect new cases of the suite with this seed (eval split) into "
        "the loop's lake, search them with beam and mcts (learned PRM, N=4) with the policy "
        "champion, and measure on those cases only",
    )
    ap.add_argument("--fresh-per-cell", type=int, default=3, help="new cases per cell")
    ap.add_argument("--suite", default="formulas-hard", help="the loop's suite (bench.loop)")
    return ap.parse_args()


def fresh_cases(domain: str, args: argparse.Namespace) -> tuple[set[str], set[str]]:
    """Collect new cases (seed ``--fresh-seed``, eval split) and search the eval split with
    beam and mcts; returns (the new case ids, the predictions versions written)."""
    from bench.loop import SUITES
    from flows.collect import CollectParams, collect
    from flows.infer import InferParams, infer
    from tasks.context import StageContext

    lake = StageContext.open(domain).lake
    before = set(lake.scan(domain, "cases").select("id").collect()["id"])
    for g in (g for g in SUITES[args.suite] if g.domain == domain):
        only = {"train": 0.0, "test": 0.0, "eval": 1.0}
        version = collect(CollectParams(domain=domain, sources=["generator"],
                                        per_cell=args.fresh_per_cell, seed=args.fresh_seed,
                                        families=list(g.families) if g.families else None,
                                        difficulties=list(g.difficulties), where=g.where,
                                        **only)).cases.version  # fmt: skip
    new = set(lake.scan(domain, "cases").select("id").collect()["id"]) - before
    versions = set()
    for strategy in ("beam", "mcts"):
        out = infer(InferParams(domain=domain, input=f"lake:cases@{version}", split="eval",
                                strategy=strategy, width=4, max_tokens=4 * 320,
                                scorer="learned", log_traces=0, review_k=0))  # fmt: skip
        versions.add(out.version)
    return new, versions


def wrong_paths(
    domain: str, only: set[str] | None = None, versions: set[str] | None = None
) -> list[dict[str, Any]]:
    """One row per wrong multi-step chosen path on a non-training case (of the cases ``only``
    and predictions ``versions`` when given): its tree, path, right leaves, strategy and
    first wrong step (1-based)."""
    import polars as pl

    from bench.loop import first_wrong_step
    from tasks.context import StageContext
    from tasks.report import chosen_nodes, load_trees, right_leaves
    from tasks.reward import load_cases

    ctx = StageContext.open(domain)
    cases, splits = load_cases(ctx)
    out = []
    for version in ctx.lake.versions(domain, "predictions"):
        if versions is not None and version not in versions:
            continue
        info = ctx.lake.info(domain, "predictions", version)
        frame = pl.read_parquet(info.path / "part-*.parquet").filter(pl.col("correct").not_())
        trees = load_trees(pl.read_parquet(info.path / "trees.parquet"))
        for r in frame.iter_rows(named=True):
            case, tree = cases.get(r["case_id"]), trees.get(r["case_id"])
            if case is None or tree is None or not case.reference:
                continue
            if only is not None and case.id not in only:
                continue
            path = chosen_nodes(tree, r["text"])
            if splits.get(case.id) == "train" or len(path) < 2:
                continue
            wrong = first_wrong_step([n.text for n in path], case.reference, False)
            good = right_leaves(ctx.domain, [case], trees).get(case.id, set())
            out.append(
                {"tree": tree, "path": path, "good": good, "first_wrong": wrong}
                | {"strategy": r["strategy"], "version": version}
            )
    return out


def hit_rates(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per rule: hits (the pick is the first wrong step), n and a 95% bootstrap CI."""
    from bench.loop import bootstrap
    from models.search.suspect import SUSPECT_RULES

    out = {}
    for name, rule in SUSPECT_RULES.items():
        hits = []
        for r in rows:
            pick = rule(r["tree"], r["path"], r["good"])
            hits.append(float(pick is not None and pick.index + 1 == r["first_wrong"]))
        mean, lo, hi = bootstrap(np.array(hits))
        out[name] = {"hit_rate": mean, "ci": [lo, hi], "n": len(hits)}
    return out


def main() -> None:
    args = _args()
    os.environ["PONDER_HOME"] = str(args.home.resolve())
    from models.search.suspect import SUSPECT_RULE

    only = versions = None
    if args.fresh_seed is not None:
        only, versions = fresh_cases(args.domain, args)
        OUT.print(f"[fresh] {len(only)} new cases (seed {args.fresh_seed}), versions {versions}")
    rows = wrong_paths(args.domain, only, versions)
    OUT.print(f"[settings] home={args.home} domain={args.domain} chosen rule={SUSPECT_RULE}"
              f" fresh seed={args.fresh_seed}")  # fmt: skip
    OUT.print(f"wrong multi-step paths on held-out and search cases: {len(rows)}")
    result: dict[str, Any] = {"all": hit_rates(rows)}
    for strategy in sorted({r["strategy"] for r in rows}):
        result[strategy] = hit_rates([r for r in rows if r["strategy"] == strategy])
    for group, rates in result.items():
        OUT.print(f"\n{group}")
        for name, v in rates.items():
            lo, hi = v["ci"]
            shown = f"{v['hit_rate']:6.1%} [{lo:.1%}, {hi:.1%}]" if v["n"] else "  no paths"
            OUT.print(f"  {name:<22s} {shown}  n={v['n']}")
    args.out.mkdir(parents=True, exist_ok=True)
    name = "suspect.json" if args.fresh_seed is None else f"suspect-seed{args.fresh_seed}.json"
    (args.out / name).write_text(json.dumps(result, indent=1))
    OUT.print(f"\nwrote {args.out / name}")


if __name__ == "__main__":
    main()

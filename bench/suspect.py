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
    return ap.parse_args()


def wrong_paths(domain: str) -> list[dict[str, Any]]:
    """One row per wrong multi-step chosen path on a non-training case: its tree, path,
    right leaves, strategy and first wrong step (1-based)."""
    import polars as pl

    from bench.loop import first_wrong_step
    from tasks.context import StageContext
    from tasks.report import chosen_nodes, load_trees
    from tasks.reward import load_cases
    from tasks.tracking import right_leaves

    ctx = StageContext.open(domain)
    cases, splits = load_cases(ctx)
    out = []
    for version in ctx.lake.versions(domain, "predictions"):
        info = ctx.lake.info(domain, "predictions", version)
        frame = pl.read_parquet(info.path / "part-*.parquet").filter(pl.col("correct").not_())
        trees = load_trees(pl.read_parquet(info.path / "trees.parquet"))
        for r in frame.iter_rows(named=True):
            case, tree = cases.get(r["case_id"]), trees.get(r["case_id"])
            if case is None or tree is None or not case.reference:
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

    rows = wrong_paths(args.domain)
    OUT.print(f"[settings] home={args.home} domain={args.domain} chosen rule={SUSPECT_RULE}")
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
    (args.out / "suspect.json").write_text(json.dumps(result, indent=1))
    OUT.print(f"\nwrote {args.out / 'suspect.json'}")


if __name__ == "__main__":
    main()

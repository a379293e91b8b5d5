"""``make bench-loop``: two turns of the loop on the real flows, and what each stage bought.

Every stage is the real flow (collect, infer, refresh_reward, finetune, evaluate_promote),
called in this process on a PONDER_HOME of its own, so the bench measures what a user
runs. Per domain of the suite:

1. collect the training cases (seed 1, all train split) and the held-out cases (seed 2,
   all test split; a case equal to a training case keeps its train split, so nothing
   evaluated was trained on);
2. held-out accuracy of the base model (greedy cot through ``infer``);
3. round 1: rollouts of the base model (train split) -> ``refresh_reward`` (ORM) ->
   ``finetune`` (SFT on reference solutions, then GRPO with the domain reward parts and
   the learned ORM) -> ``evaluate_promote`` against the base model (the real gate);
4. round 2: the round-1 champion's rollouts on every split; simulated reviewers mark the
   first wrong step of each sampled path by comparing its numbers with the reference
   solution, and the labels go in through the same feedback inbox a person uses (reviewer
   ``simulated-reviewer``); ``refresh_reward`` trains the PRM from them and Monte-Carlo
   rollouts; GRPO again from the round-1 champion with the PRM as a reward part;
   ``evaluate_promote`` against the round-1 champion;
5. search with the final champion: each strategy at each N on the held-out cases (at
   N = 1 every strategy is a single path, so N = 1 runs greedy cot only).

Prints every setting, each accuracy with a 95% bootstrap CI (paired differences for the
stage gains), ORM pairwise accuracy and PRM AUROC on held-out data, ECE, wall time per
stage; writes ``loop.json``, ``stages.png`` and ``search.png`` under --out.

Run: ``python -m bench.loop`` (the issue's suite; many hours on 2 CPU cores),
``--suite formulas-hard`` (the demo's four formulas at levels 3-5; about 1.5-2 hours) or
``--suite formulas`` (the demo's suite). The terminal shows one line per stage; library
output goes to ``$PONDER_HOME/logs/`` (``--verbose`` keeps it on the terminal). loop.json
is rewritten after each domain's rounds and after its search, with ``complete`` false
until the end; ``--report .ponder/bench/loop/loop.json`` prints and plots a saved run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

OUT = Console(markup=False, highlight=False)  # the terminal; library noise goes to the log
BASE = "models:/ponder-base-policy@champion"
REVIEWER = "simulated-reviewer"


@dataclass(frozen=True)
class Group:
    """Cases of one part of a suite: a domain's families at some levels, maybe filtered."""

    domain: str
    families: tuple[str, ...] | None
    difficulties: tuple[int, ...]
    where: dict[str, list[str]] | None = None


MEDICINE_FORMULAS = ["anion_gap", "corrected_calcium", "bmi", "qtc_bazett"]
SUITES: dict[str, list[Group]] = {
    "issue": [
        Group("medicine", None, (3, 4, 5)),
        Group("finance_risk", ("credit_capital",), (3, 4, 5)),
        Group("finance_risk", ("structuring",), (2, 3)),
        Group("finance_risk", ("aml_typology",), (1, 2)),
    ],
    # the medicine part alone: all 11 calculators at the hard levels
    "medicine-hard": [Group("medicine", None, (3, 4, 5))],
    "formulas": [Group("medicine", None, (1, 2), {"calculator": MEDICINE_FORMULAS})],
    # the demo's four formulas at the hard levels (mixed units, distractors)
    "formulas-hard": [Group("medicine", None, (3, 4, 5), {"calculator": MEDICINE_FORMULAS})],
}
STRATEGIES = {  # strategy -> the scorer it uses
    "cot": "policy_logprob",
    "self_consistency": "policy_logprob",
    "best_of_n": "policy_logprob",
    "weighted_best_of_n": "learned",
    "beam": "learned",
    "mcts": "learned",
}


@dataclass
class Clock:
    """Wall time per stage, in the order the stages ran, and a journal of each finished
    stage's result, so that ``--resume`` picks a stopped run up at its first unfinished
    stage (the lake, registry and models it made live on in the bench's home)."""

    stages: dict[str, float] = field(default_factory=dict)
    verbose: bool = False
    after: Any = None  # called after every stage (the bench rewrites loop.json)
    journal: Path | None = None  # stage name -> its result, JSON, written as each ends
    done: dict[str, Any] = field(default_factory=dict)  # the journal's contents

    def __post_init__(self) -> None:
        if self.journal is not None and self.journal.is_file():
            self.done = json.loads(self.journal.read_text())

    def run(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from models import progress

        if name in self.done:
            OUT.print(f"↺ {name:<44s} resumed (its result is in {self.journal})")
            return self.done[name]
        progress.stage(name)
        if self.after is not None:  # the previous stage's result is stored by now
            self.after()
        start = time.perf_counter()
        try:
            with _stage_engines():
                result = fn(*args, **kwargs)
            self._record(name, result)
            return result
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - start
            if self.after is not None:
                self.after()
            if self.verbose:  # otherwise the stage display draws the line
                OUT.print(f"[loop] {name:<28s} {self.stages[name] / 60:6.1f} min")

    def _record(self, name: str, result: Any) -> None:
        if self.journal is None:
            return
        self.done[name] = json.loads(json.dumps(result, default=str))
        tmp = self.journal.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=1))
        tmp.replace(self.journal)


@contextmanager
def _stage_engines() -> Iterator[None]:
    """Shut down the vLLM engines a stage started: each reserves a fifth of RAM for its KV
    cache on CPU, and in one process they pile up across stages until the next one cannot
    start. Engines that were running before the stage (the caller's) are left alone."""
    import gc

    from models.engine import scoped_generators

    try:
        with scoped_generators():
            yield
    finally:
        gc.collect()


def bootstrap(xs: np.ndarray, seed: int = 0, n: int = 2000) -> tuple[float, float, float]:
    """Mean and 95% percentile bootstrap interval (for a paired difference, pass it)."""
    xs = np.asarray(xs, dtype=float)
    if xs.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(xs, size=(n, xs.size), replace=True).mean(axis=1)
    return float(xs.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def fmt(ci: tuple[float, float, float], signed: bool = False) -> str:
    s = "+" if signed else ""
    return f"{100 * ci[0]:{s}.1f}% [{100 * ci[1]:{s}.1f}, {100 * ci[2]:{s}.1f}]"


# -- the stages, each through its real flow ------------------------------------------------
def collect_suite(domain: str, groups: list[Group], args: argparse.Namespace) -> str:
    """Training cases (seed 1, train split), held-out cases for the stages (seed 2, test
    split) and for search (seed 3, eval split); returns the cases version. Only the train
    split trains a policy or a reward model."""
    from flows.collect import CollectParams, collect

    out = None
    for seed, per_cell, split in (
        (1, args.train_per_cell, "train"),
        (2, args.heldout_per_cell, "test"),
        (3, args.search_per_cell, "eval"),
    ):
        shares = {"train": 0.0, "eval": 0.0, "test": 0.0} | {split: 1.0}
        for g in groups:
            out = collect(
                CollectParams(
                    domain=domain,
                    sources=["generator"],
                    per_cell=per_cell,
                    seed=seed,
                    families=list(g.families) if g.families else None,
                    difficulties=list(g.difficulties),
                    where=g.where,
                    **shares,
                )
            )
    return out.cases.version


def held_out(domain: str, version: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    """Greedy cot on the test split through ``infer``: per-case correctness, tokens, ECE."""
    import polars as pl

    from flows.infer import InferParams, infer
    from models.settings import get_settings
    from tasks.context import StageContext
    from tasks.evaluate import ece
    from tasks.lake import Lake
    from tasks.reward import load_cases

    out = infer(
        InferParams(
            domain=domain,
            input=f"lake:cases@{version}",
            split="test",
            model=model,
            strategy="cot",
            width=1,
            temperature=0.0,
            max_tokens=args.max_tokens,
            log_traces=0,
        )
    )
    frame = (
        Lake(get_settings().lake_root)
        .scan(domain, "predictions", out.version)
        .filter(pl.col("model_version") == out.model)
        .collect()
        .sort("case_id")
    )
    correct = frame["correct"].fill_null(False).cast(pl.Float64).to_numpy()
    cases, _ = load_cases(StageContext.open(domain))
    return {
        "case_id": frame["case_id"].to_list(),
        "family": [_group(cases[c]) for c in frame["case_id"]],
        "correct": correct.tolist(),
        "tokens": float(frame["tokens"].mean() or 0.0),
        "ece": ece(frame["confidence"].to_numpy(), correct),
        "accuracy": bootstrap(correct),
    }


def _group(case: Any) -> str:
    """The family, and the calculator where the family has several (medicine)."""
    calc = case.inputs.get("calculator")
    return f"{case.family}/{calc}" if calc else case.family


def rollouts(
    domain: str, version: str, model: str, split: str | None, args, max_tokens: int
) -> dict[str, Any]:
    from flows.infer import InferParams, infer

    return infer(
        InferParams(
            domain=domain,
            input=f"lake:cases@{version}",
            split=split,
            model=model,
            strategy="self_consistency",
            width=args.rollout_width,
            # a sampling strategy's max_tokens is the budget of all its paths: each path
            # gets the per-answer cap (at 320 for both, round 1's answers were cut: 21% parsed)
            max_tokens=max_tokens * args.rollout_width,
            log_traces=0,
        )
    ).model_dump()


def refresh(domain: str, policy: str, kinds: list[str], args) -> dict[str, Any]:
    from flows.refresh_reward import RefreshParams, refresh_reward

    return refresh_reward(
        RefreshParams(
            domain=domain,
            policy=policy,
            models=kinds,
            mc_rollouts=args.mc_rollouts,
            mc_paths_per_case=1,
            mc_max_tokens=args.mc_tokens,
            train={
                "max_steps": args.prm_steps if kinds == ["prm"] else args.rm_steps,
                "batch_size": 4,
                "max_length": 3072,
            },
        )
    ).model_dump()


def tune(domain: str, version: str, base: str, args, **kw: Any) -> dict[str, Any]:
    from flows.finetune import FinetuneParams, finetune

    sft = kw.pop("sft", True)
    steps = kw.pop("grpo_steps")
    return finetune(
        FinetuneParams(
            domain=domain,
            dataset_version=version,
            base_model=base,
            curriculum=False,
            max_rows=args.max_rows,
            train={
                "sft": sft,
                "sft_max_steps": args.sft_steps,
                "sft_learning_rate": args.sft_lr,
                "grpo_max_steps": steps,
                "learning_rate": args.grpo_lr,
                "num_generations": args.generations,
                "batch_size": args.generations * 2,
                "max_completion_length": args.max_tokens,
                "max_length": 3072,
                "loss_type": args.loss_type,
            },
            **kw,
        )
    ).model_dump()


def judge(domain: str, version: str, challenger: str, args) -> dict[str, Any]:
    from flows.evaluate_promote import EvaluateParams, evaluate_promote

    return evaluate_promote(
        EvaluateParams(
            domain=domain,
            dataset_version=version,
            challenger=challenger,
            strategy="cot",
            width=1,
            temperature=0.0,
            max_tokens=args.max_tokens,
        )
    ).model_dump()


# -- simulated reviewers -------------------------------------------------------------------
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _numbers(text: str) -> set[str]:
    return {f"{float(n):g}" for n in NUMBER.findall(text)}


def first_wrong_step(steps: list[str], reference: str, correct: bool) -> int:
    """1-based index of the first step that states a number the reference solution does
    not (0: none wrong). A correct final answer with clean steps is 0; a wrong answer
    whose steps all look clean blames its last step."""
    ref = _numbers(reference)
    for k, step in enumerate(steps, start=1):
        if _numbers(step) - ref:
            return k
    return 0 if correct else len(steps)


def simulated_labels(domain: str, predictions: str, inbox: Path, cap: int) -> int:
    """First-wrong-step labels for the stored tree paths of one predictions version,
    written as a feedback file to the inbox (the path a person's CSV export takes);
    returns how many."""
    import polars as pl

    from tasks.context import StageContext
    from tasks.report import load_trees
    from tasks.reward import load_cases

    ctx = StageContext.open(domain)
    lake, d = ctx.lake, ctx.domain
    cases, _ = load_cases(ctx)
    path = lake.info(domain, "predictions", predictions).path / "trees.parquet"
    rows = []
    for case_id, tree in load_trees(pl.read_parquet(path)).items():
        case = cases.get(case_id)
        if case is None or not case.reference:
            continue
        for leaf in tree.leaves()[:2]:
            steps = [n.text for n in tree.path(leaf)]
            ok = d.check(tree.text(leaf), case).correct
            wrong = first_wrong_step(steps, case.reference, ok)
            rows.append(label_row(case_id, leaf.id, wrong))
    rows = rows[:cap]
    target = inbox / "feedback" / f"simulated-{predictions}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(target)
    return len(rows)


def label_row(case_id: str, leaf: int, first_wrong: int) -> dict[str, Any]:
    """One simulated reviewer's first-wrong-step label, as a person's feedback file row
    (with its timestamp: without one collect quarantined every simulated label)."""
    import datetime as dt

    return {
        "case_id": case_id,
        "trace_id": f"{case_id}#{leaf}",
        "reviewer_id": REVIEWER,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "kind": "first_wrong_step",
        "first_wrong_step": first_wrong,
        "rationale": "simulated: compared with the reference solution",
    }


# -- the loop ------------------------------------------------------------------------------
def run_domain(
    domain: str, groups: list[Group], args, clock: Clock, out: dict[str, Any]
) -> dict[str, Any]:
    """Both rounds for one domain, filling ``out`` as each stage ends (so loop.json, written
    after every stage, keeps what a stopped run measured)."""
    from flows.collect import CollectParams, collect
    from models.settings import get_settings

    out["groups"] = [g.__dict__ for g in groups]
    version = clock.run(f"{domain}: collect", collect_suite, domain, groups, args)
    out["cases_version"] = version
    acc: dict[str, Any] = {}
    out["accuracy"] = acc
    acc["base"] = clock.run(f"{domain}: held-out base", held_out, domain, version, BASE, args)
    clock.run(
        f"{domain}: rollouts (base)",
        rollouts,
        domain,
        version,
        BASE,
        None,
        args,
        args.base_rollout_tokens,
    )
    r1_rm = clock.run(f"{domain}: refresh ORM", refresh, domain, BASE, ["orm"], args)
    out["orm"] = r1_rm.get("orm")
    orm = _uri(domain, "orm", r1_rm.get("orm"))
    r1 = clock.run(
        f"{domain}: finetune round 1",
        tune,
        domain,
        version,
        BASE,
        args,
        grpo_steps=args.grpo_steps,
        orm=orm,
    )
    acc["sft"] = clock.run(
        f"{domain}: held-out SFT",
        held_out,
        domain,
        version,
        str(Path(r1["work_dir"]) / "sft"),
        args,
    )
    r1_uri = f"models:/ponder-{domain}-policy/{r1['version']}"
    gate1 = clock.run(f"{domain}: evaluate round 1", judge, domain, version, r1_uri, args)
    out["gates"] = {"round1": _gate(gate1)}
    acc["round1"] = clock.run(
        f"{domain}: held-out round 1", held_out, domain, version, r1_uri, args
    )
    champion1 = r1_uri if gate1["promoted"] else BASE
    preds = clock.run(
        f"{domain}: rollouts (round 1)",
        rollouts,
        domain,
        version,
        champion1,
        None,
        args,
        args.max_tokens,
    )
    inbox = Path(get_settings().home) / "inbox"
    out["simulated_labels"] = clock.run(
        f"{domain}: simulated reviewers",
        simulated_labels,
        domain,
        preds["version"],
        inbox,
        args.review_cap,
    )
    clock.run(
        f"{domain}: collect labels",
        lambda params: collect(params).model_dump(),
        CollectParams(domain=domain, sources=["files"], per_cell=0, inbox=inbox),
    )
    r2_rm = clock.run(f"{domain}: refresh PRM", refresh, domain, champion1, ["prm"], args)
    out["prm"] = r2_rm.get("prm")
    prm = _uri(domain, "prm", r2_rm.get("prm"))
    r2 = clock.run(
        f"{domain}: finetune round 2",
        tune,
        domain,
        version,
        champion1,
        args,
        sft=False,
        grpo_steps=args.grpo_steps_round2,
        orm=orm,
        prm=prm,
    )
    r2_uri = f"models:/ponder-{domain}-policy/{r2['version']}"
    gate2 = clock.run(f"{domain}: evaluate round 2", judge, domain, version, r2_uri, args)
    out["gates"]["round2"] = _gate(gate2)
    acc["round2"] = clock.run(
        f"{domain}: held-out round 2", held_out, domain, version, r2_uri, args
    )
    final = r2_uri if gate2["promoted"] else champion1
    out["final_champion"] = final
    return out


def search(
    domain: str,
    version: str,
    model: str,
    args,
    clock: Clock,
    *,
    rows: list[dict[str, Any]],
    save: Any,
) -> None:
    """Each strategy at each N on the held-out cases with the final champion, appended to
    ``rows``; loop.json is rewritten after each. At one N every strategy gets the same
    generated-token budget per case, N times the per-answer cap; each row reports the
    tokens it actually generated."""
    import polars as pl

    from flows.infer import InferParams
    from models.settings import get_settings
    from tasks.evaluate import ece
    from tasks.lake import Lake

    for n in args.search_n:
        for strategy, scorer in STRATEGIES.items():
            if (strategy == "cot") != (n == 1):  # at N = 1 every strategy is one path: cot
                continue
            if args.strategies and strategy not in args.strategies:
                continue
            params = InferParams(
                domain=domain,
                input=f"lake:cases@{version}",
                split="eval",  # the search set: held out, and smaller than the stages' set
                model=model,
                strategy=strategy,
                width=n,
                # one budget per N for every strategy: N paths of the per-answer cap (the
                # cap is per case, so a fixed one would give each of 16 samples 1/16 of it)
                max_tokens=n * args.max_tokens,
                scorer=scorer,
                log_traces=0,
            )
            got = clock.run(f"{domain}: search {strategy} N={n}", _infer, params)
            frame = (
                Lake(get_settings().lake_root)
                .scan(domain, "predictions", got["version"])
                .filter(pl.col("model_version") == got["model"])
                .collect()
            )
            correct = frame["correct"].fill_null(False).cast(pl.Float64).to_numpy()
            rows.append(
                {
                    "strategy": strategy,
                    "n": n,
                    "accuracy": bootstrap(correct),
                    "tokens_per_case": float(frame["tokens"].mean() or 0.0),
                    "case_id": frame["case_id"].to_list(),
                    "correct": correct.tolist(),
                    "predictions": got["version"],
                    "ece": ece(frame["confidence"].fill_null(0.0).to_numpy(), correct),
                }
            )
            save()


def _infer(params: Any) -> dict[str, Any]:
    """``infer`` with its result as plain data (the journal stores JSON)."""
    from flows.infer import infer

    return infer(params).model_dump()


def _uri(domain: str, kind: str, result: Any) -> str | None:
    if isinstance(result, dict) and result.get("decision") == "promoted":
        return f"models:/ponder-{domain}-{kind}/{result['version']}"
    return None


def _gate(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("promoted", "reasons", "accuracy_diff", "ci", "baseline", "champion", "challenger")
    return {k: summary.get(k) for k in keep}


# -- the report ----------------------------------------------------------------------------
def paired(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, float]:
    """b - a on the cases both answered, with a paired bootstrap CI."""
    ia = dict(zip(a["case_id"], a["correct"], strict=True))
    ib = dict(zip(b["case_id"], b["correct"], strict=True))
    common = sorted(set(ia) & set(ib))
    return bootstrap(np.array([ib[c] - ia[c] for c in common]))


def report(results: dict[str, Any], args, clock: Clock) -> None:
    """Every figure measured so far; a stopped run prints the stages it reached."""
    OUT.print("\n[loop] held-out accuracy by stage (greedy cot; 95% bootstrap CI over cases)")
    for domain, r in results.items():
        acc = r.get("accuracy", {})
        stages = [s for s in ("base", "sft", "round1", "round2") if s in acc]
        for stage in stages:
            a = acc[stage]
            OUT.print(
                f"  {domain:<13s} {stage:<7s} {fmt(a['accuracy'])}  n={len(a['correct'])}  "
                f"tokens {a['tokens']:.0f}  ECE {a['ece']:.3f}"
            )
        for fam in sorted(set(acc["base"]["family"])) if stages else []:
            line = "  ".join(f"{s} {_fam(acc[s], fam):.1%}" for s in stages)
            OUT.print(f"    {fam:<18s} {line}")
        _goal_lines(r, acc)
        for name, g in (r.get("gates") or {}).items():
            OUT.print(
                f"  gate {name}: {'PROMOTED' if g['promoted'] else 'not promoted'}; "
                + "; ".join(g["reasons"] or [])
            )
        if r.get("search"):
            _search_report(r["search"])
    OUT.print("\n[loop] wall time per stage")
    for name, s in clock.stages.items():
        OUT.print(f"  {name:<40s} {s / 60:6.1f} min")


def _goal_lines(r: dict[str, Any], acc: dict[str, Any]) -> None:
    """The issue's goals 1, 2, 4 and 5, each once the stages it compares have run."""
    if "sft" in acc and "round1" in acc:
        gain = fmt(paired(acc["sft"], acc["round1"]), True)
        OUT.print(f"  goal 1, GRPO over SFT (paired): {gain} (goal >= +15)")
    if "round2" in acc:
        final, base = fmt(acc["round2"]["accuracy"]), fmt(acc["base"]["accuracy"])
        OUT.print(f"  goal 2, round-2 champion: {final} (goal >= 75%; base {base})")
        turn = fmt(paired(acc["round1"], acc["round2"]), True)
        OUT.print(f"  goal 5, round 2 - round 1 (paired): {turn} (CI not below 0)")
    if r.get("prm") is not None:
        prm = r["prm"]
        OUT.print(
            f"  goal 4, PRM held-out AUROC: {prm.get('heldout_auroc')} (goal >= 0.80; "
            f"{prm.get('heldout_examples')} held-out paths; {r.get('simulated_labels')} "
            "simulated labels in all)"
        )
    if r.get("orm") is not None:
        orm = r["orm"]
        OUT.print(
            f"  ORM held-out pairwise accuracy: {orm.get('heldout_accuracy')} "
            f"({orm.get('heldout_examples')} pairs)"
        )


def _fam(stage: dict[str, Any], family: str) -> float:
    xs = [c for c, f in zip(stage["correct"], stage["family"], strict=True) if f == family]
    return float(np.mean(xs)) if xs else float("nan")


def _search_report(rows: list[dict[str, Any]]) -> None:
    OUT.print("  search with the final champion (held-out):")
    for r in rows:
        tokens = r["tokens_per_case"]
        calib = f"ECE {r['ece']:.3f}" if r.get("ece") is not None else "ECE n/a"
        OUT.print(
            f"    {r['strategy']:<20s} N={r['n']:<3d} {fmt(r['accuracy'])}  "
            f"tokens {tokens:.0f}  {calib} (confidence from {STRATEGIES[r['strategy']]})"
        )
    by = {(r["strategy"], r["n"]): r for r in rows}
    for n in sorted({r["n"] for r in rows if r["n"] > 1}):
        sc = by.get(("self_consistency", n))
        learned = [by[(s, n)] for s in ("weighted_best_of_n", "beam", "mcts") if (s, n) in by]
        if sc and learned:
            best = max(learned, key=lambda r: r["accuracy"][0])
            OUT.print(
                f"    goal 3 at N={n}: {best['strategy']} - self_consistency "
                f"{fmt(paired(sc, best), True)} (goal >= +5, CI excluding 0)"
            )


def plots(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for domain, r in results.items():
        stages = [s for s in ("base", "sft", "round1", "round2") if s in r.get("accuracy", {})]
        ys = [100 * r["accuracy"][s]["accuracy"][0] for s in stages]
        lo = [100 * r["accuracy"][s]["accuracy"][1] for s in stages]
        hi = [100 * r["accuracy"][s]["accuracy"][2] for s in stages]
        ax.errorbar(
            stages,
            ys,
            yerr=[np.subtract(ys, lo), np.subtract(hi, ys)],
            marker="o",
            capsize=3,
            label=domain,
        )
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("accuracy by stage (95% bootstrap CI)")
    ax.legend(fontsize=8)
    fig.savefig(out / "stages.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for domain, r in results.items():
        for strategy in STRATEGIES:
            pts = sorted(
                (x["tokens_per_case"], 100 * x["accuracy"][0])
                for x in r.get("search", [])
                if x["strategy"] == strategy
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=f"{domain} {strategy}")
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per case")
    ax.set_ylabel("held-out accuracy (%)")
    ax.legend(fontsize=7)
    fig.savefig(out / "search.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--suite", choices=sorted(SUITES), default="formulas-hard")
    ap.add_argument(
        "--train-per-cell", type=int, default=12, help="training cases per family x level"
    )
    ap.add_argument(
        "--heldout-per-cell", type=int, default=14, help="held-out cases per family x level"
    )
    ap.add_argument(
        "--search-per-cell",
        type=int,
        default=10,
        help="search cases per family x level (seed 3, eval split): every strategy at "
        "N = 16 generates 16 paths per case, so this set is smaller than the stages' one",
    )
    ap.add_argument("--max-tokens", type=int, default=320, help="generated-token cap per answer")
    ap.add_argument("--rollout-width", type=int, default=2, help="samples per case for RM data")
    ap.add_argument(
        "--base-rollout-tokens",
        type=int,
        default=128,
        help="cap of the base model's rollouts (it never stops on its own; the reference "
        "solution is the correct side of its verifier pairs)",
    )
    ap.add_argument("--mc-tokens", type=int, default=256, help="cap per Monte-Carlo completion")
    ap.add_argument(
        "--mc-rollouts", type=int, default=2, help="Monte-Carlo completions per step prefix"
    )
    ap.add_argument("--rm-steps", type=int, default=8, help="ORM training steps")
    ap.add_argument("--prm-steps", type=int, default=16, help="PRM training steps")
    ap.add_argument("--max-rows", type=int, default=512, help="most training prompts")
    ap.add_argument("--sft-steps", type=int, default=32)
    ap.add_argument("--sft-lr", type=float, default=2e-4)
    ap.add_argument("--grpo-steps", type=int, default=3)
    ap.add_argument("--grpo-steps-round2", type=int, default=3)
    ap.add_argument("--grpo-lr", type=float, default=1e-5)
    ap.add_argument("--generations", type=int, default=4, help="GRPO group size")
    ap.add_argument("--loss-type", default="dr_grpo", help="TRL GRPO loss_type (Dr. GRPO)")
    ap.add_argument("--review-cap", type=int, default=400, help="most simulated labels")
    ap.add_argument("--search-n", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument(
        "--strategies",
        nargs="+",
        choices=sorted(STRATEGIES),
        help="search only these strategies (default: every one); to fit a time budget",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="go on from the first stage the last run in --out did not finish",
    )
    ap.add_argument("--out", type=Path, default=Path(".ponder/bench/loop"))
    ap.add_argument("--verbose", action="store_true", help="library output on the terminal")
    ap.add_argument(
        "--report", type=Path, help="print the report and plots of a loop.json and stop"
    )
    args = ap.parse_args()
    if args.report:
        doc = json.loads(args.report.read_text())
        if not doc.get("complete"):
            OUT.print(f"[loop] {args.report} is partial: a stage after the last one written failed")
        report(doc["results"], args, Clock(stages=doc["wall_s"]))
        plots(doc["results"], args.report.parent)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    home = (args.out / "home").resolve()
    os.environ["PONDER_HOME"] = str(home)
    OUT.print(f"[settings] {vars(args)}\n[settings] PONDER_HOME={home}")
    from flows.console import STATE, quiet
    from models.settings import get_settings

    get_settings.cache_clear()
    STATE["verbose"] = args.verbose
    with quiet("bench-loop", [OUT]) as log:
        try:
            results, clock = _loop(args)
        except BaseException as err:
            OUT.print(f"[loop] failed: {type(err).__name__}; the traceback is in {log}")
            raise
    report(results, args, clock)
    plots(results, args.out)
    OUT.print(f"[loop] wrote {args.out / 'loop.json'}, stages.png, search.png")
    if log:
        OUT.print(f"library log: {log}")


def _loop(args: argparse.Namespace) -> tuple[dict[str, Any], Clock]:
    """Every domain of the suite through both rounds; loop.json after each domain."""
    journal = args.out / "journal.json"
    previous = args.out / "loop.json"
    if not args.resume:
        journal.unlink(missing_ok=True)
    clock = Clock(verbose=args.verbose, journal=journal)
    if args.resume and previous.is_file():  # the finished stages keep their wall times
        walls = json.loads(previous.read_text())["wall_s"]
        clock.stages = {k: v for k, v in walls.items() if k in clock.done}
    clock.run("build the example model", fetch_base_model)
    results: dict[str, Any] = {}
    suite = SUITES[args.suite]
    domains = list(dict.fromkeys(g.domain for g in suite))
    for domain in domains:
        last = domain == domains[-1]
        r = results[domain] = {}
        clock.after = lambda: _write(args, results, clock, complete=False)
        run_domain(domain, [g for g in suite if g.domain == domain], args, clock, r)
        _write(args, results, clock, complete=last and args.skip_search)
        if not args.skip_search:
            r["search"] = []  # filled row by row, so a run stopped mid-search keeps its rows
            search(
                domain,
                r["cases_version"],
                r["final_champion"],
                args,
                clock,
                rows=r["search"],
                save=lambda: _write(args, results, clock, complete=False),
            )
            _write(args, results, clock, complete=last)
    return results, clock


def _write(args: argparse.Namespace, results: dict[str, Any], clock: Clock, complete: bool) -> None:
    """loop.json so far; ``complete`` is false until every stage of every domain ran."""
    doc = {
        "complete": complete,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "results": results,
        "wall_s": clock.stages,
    }
    (args.out / "loop.json").write_text(json.dumps(doc, indent=1))


def fetch_base_model() -> None:
    """The example model registered in this home's registry (built once per home)."""
    from models.example import fetch_example

    fetch_example()


if __name__ == "__main__":
    main()

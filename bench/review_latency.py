"""How long a reviewer's step label takes to reach a refreshed PRM, on the demo's setup.

``python -m bench.review_latency`` works in a home of its own (``--home``): the demo's local
SQLite MLflow store and Prefect, and the example model (SmolLM2-135M, built by
``ponder models fetch-example`` into the home).

1. collect: ``--per-cell`` medicine cases of the demo's four formula calculators, level 1;
2. infer: beam search with the example model, every case traced and queued for review;
3. a simulated reviewer labels every queued trace on its step spans (``mlflow.log_feedback``
   with ``span_id``, as the UI's span view does): the last step wrong on half the traces,
   every step right on the others; the clock starts at the first label;
4. collect reads the labels (``mlflow_feedback``); refresh_reward trains the PRM with the
   demo's training knobs (``--mc-rollouts`` Monte-Carlo completions per step prefix; 0 by
   default, so the time is the reviewer path's own); the clock stops when the PRM is
   registered and gated.

Prints each stage's seconds and the total from label to refreshed PRM, and the gate's
decision. One run: a latency on a shared 2-core box, not a throughput figure.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

OUT = Console(highlight=False, markup=False, soft_wrap=True)
FORMULAS = ["anion_gap", "corrected_calcium", "bmi", "qtc_bazett"]


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", type=Path, default=Path(".ponder/bench/review_latency"))
    ap.add_argument("--per-cell", type=int, default=8, help="generator cases per family")
    ap.add_argument("--mc-rollouts", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None, help="default: the example model")
    return ap.parse_args()


def _timed(name: str, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    took = time.perf_counter() - start
    OUT.print(f"✓ {name:34s} {took:7.1f} s")
    return out, took


def label_traces(domain: str) -> int:
    """Label every traced case's step spans, as a reviewer would: within each split, every
    other trace has its last step wrong (so held-out labels hold both classes)."""
    import mlflow
    from mlflow.entities import AssessmentSource

    from models.registry import TRACE_EXPERIMENT, ensure_experiment
    from tasks.collect import case_refs
    from tasks.context import StageContext
    from tasks.reward import load_cases

    ctx = StageContext.open(domain)
    refs, splits = case_refs(ctx), load_cases(ctx)[1]
    exp = ensure_experiment(TRACE_EXPERIMENT)
    traces = mlflow.search_traces(locations=[exp], return_type="list")
    who, n, seen = AssessmentSource(source_type="HUMAN", source_id="bench-reviewer"), 0, {}
    for trace in traces:
        split = splits.get(refs.get(trace.info.tags.get("ponder.case_ref", ""), ""), "train")
        seen[split] = seen.get(split, 0) + 1
        steps = sorted(
            (s for s in trace.data.spans if s.name.startswith("step ")),
            key=lambda s: int(s.name.split()[1]),
        )
        for i, span in enumerate(steps):
            wrong = seen[split] % 2 == 1 and i == len(steps) - 1
            mlflow.log_feedback(
                trace_id=trace.info.trace_id,
                name="step",
                value="wrong" if wrong else "correct",
                source=who,
                span_id=span.span_id,
            )
            n += 1
    return n


def main() -> None:
    args = _args()
    os.environ["PONDER_HOME"] = str(args.home.resolve())
    from flows.console import quiet
    from models.settings import get_settings

    get_settings.cache_clear()
    OUT.print(f"settings: home {args.home}, {args.per_cell} generator cases per family (the "
              f"{len(FORMULAS)} formula calculators, level 1), beam width 2, PRM training "
              f"max_steps 4 batch 2, mc_rollouts {args.mc_rollouts}")  # fmt: skip
    with quiet("bench-review-latency", [OUT]) as log:
        stages(args)
    OUT.print(f"library output: {log}")


def stages(args: argparse.Namespace) -> None:
    from flows.collect import CollectParams, collect
    from flows.infer import InferParams, infer
    from flows.refresh_reward import RefreshParams, refresh_reward
    from models.example import fetch_example
    from models.reward import RMTrainConfig

    model = args.model or fetch_example().model_dir
    domain, every = "medicine", 1000  # every case traced and queued
    base = {"domain": domain, "check_traces": False, "train": 0.5, "eval": 0.5, "test": 0.0}
    where = {"calculator": FORMULAS}
    new = CollectParams(**base, per_cell=args.per_cell, difficulties=[1], where=where)
    _timed("collect cases", collect, new.model_copy(update={"sources": ["generator"]}))
    search = {"strategy": "beam", "width": 2, "max_tokens": 512}
    ran, _ = _timed(
        "infer (beam, traced, queued)",
        infer,
        InferParams(
            domain=domain,
            input="lake:cases",
            split=None,
            model=str(model),
            log_traces=every,
            review_k=every,
            **search,
        ),  # fmt: skip
    )
    start = time.perf_counter()
    labels, _ = _timed("reviewer labels", label_traces, domain)
    feedback = CollectParams(**base, per_cell=0, sources=["mlflow_feedback"])
    _timed("collect labels", collect, feedback)
    train = RMTrainConfig(max_steps=4, batch_size=2, max_length=2048)
    refreshed, _ = _timed(
        "refresh PRM",
        refresh_reward,
        RefreshParams(
            domain=domain,
            policy=str(model),
            models=["prm"],
            mc_rollouts=args.mc_rollouts,
            train=train,
        ),  # fmt: skip
    )
    total = time.perf_counter() - start
    prm = refreshed.prm
    verdict = f"v{prm.version} {prm.decision} (held-out AUROC {prm.heldout_auroc})" if prm else "-"
    OUT.print(f"{ran.queued} cases queued, {labels} step labels; PRM {verdict}")
    OUT.print(f"label -> refreshed PRM: {total:.1f} s")


if __name__ == "__main__":
    main()

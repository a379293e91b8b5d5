"""Held-out accuracy after SFT alone: the first half of bench-loop's round 1, in minutes.

``python -m bench.sft`` builds the example model, collects bench-loop's suite with the same
seeds and sizes (train seed 1, held-out seed 2), fine-tunes on the reference solutions with
bench-loop's SFT settings, and scores the held-out cases greedily, per family and
calculator, with 95% bootstrap CIs. Use it to compare reference formats: check out each,
run it, and compare the per-family rows (the cases are the same; only the references
differ). It writes ``sft.json`` beside its home.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console

OUT = Console(highlight=False)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--suite", default="formulas-hard", help="a bench.loop suite")
    ap.add_argument("--train-per-cell", type=int, default=12)
    ap.add_argument("--heldout-per-cell", type=int, default=14)
    ap.add_argument("--search-per-cell", type=int, default=0, help="bench-loop's seed-3 set")
    ap.add_argument("--max-tokens", type=int, default=320, help="generated-token cap per answer")
    ap.add_argument("--max-rows", type=int, default=512)
    ap.add_argument("--sft-steps", type=int, default=32)
    ap.add_argument("--sft-lr", type=float, default=2e-4)
    ap.add_argument("--generations", type=int, default=4, help="sets the batch as in bench.loop")
    ap.add_argument("--out", type=Path, default=Path(".ponder/bench/sft"))
    return ap.parse_args()


def sft_only(domain: str, version: str, args: argparse.Namespace) -> Path:
    """SFT on the train split exactly as bench.loop's ``tune`` configures it."""
    from bench.loop import BASE
    from models.policy import PolicyTrainConfig, train_sft
    from tasks.context import StageContext
    from tasks.finetune import training_rows
    from tasks.infer import resolve_model

    ctx = StageContext.open(domain)
    tools = ctx.domain.active_tools(None)
    rows, _ = training_rows(ctx, version=version, family=None, difficulties=None, tools=tools)
    cfg = PolicyTrainConfig(
        sft_max_steps=args.sft_steps,
        sft_learning_rate=args.sft_lr,
        num_generations=args.generations,
        batch_size=args.generations * 2,
        max_completion_length=args.max_tokens,
        max_length=3072,
    )
    _, _, base = resolve_model(ctx, model=BASE)
    return train_sft(rows[: args.max_rows], base, args.out / "sft", cfg)


def per_group(result: dict[str, Any]) -> dict[str, list[float]]:
    """Accuracy and its 95% bootstrap CI per family/calculator."""
    import numpy as np

    from bench.loop import bootstrap

    groups: dict[str, list[float]] = {}
    for fam, ok in zip(result["family"], result["correct"], strict=True):
        groups.setdefault(fam, []).append(ok)
    return {g: list(bootstrap(np.array(v))) + [len(v)] for g, v in sorted(groups.items())}


def main() -> None:
    args = _args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["PONDER_HOME"] = str((args.out / "home").resolve())
    from bench.loop import SUITES, collect_suite, fetch_base_model, held_out
    from flows.console import quiet
    from models.settings import get_settings

    get_settings.cache_clear()
    OUT.print(f"[settings] {vars(args)}")
    groups = [g for g in SUITES[args.suite] if g.domain == "medicine"]
    with quiet("bench-sft", [OUT]):
        fetch_base_model()
        version = collect_suite("medicine", groups, args)
        sft = sft_only("medicine", version, args)
        result = held_out("medicine", version, str(sft), args)
    low, high = result["accuracy"][1], result["accuracy"][2]
    OUT.print(f"held-out after SFT: {result['accuracy'][0]:.1%} [{low:.1%}, {high:.1%}]")
    table = per_group(result)
    for group, (acc, lo, hi, n) in table.items():
        OUT.print(f"  {group:40s} {acc:6.1%} [{lo:.1%}, {hi:.1%}]  n={n}")
    doc = {"settings": {k: str(v) for k, v in vars(args).items()}, "result": result}
    doc["per_group"] = table
    (args.out / "sft.json").write_text(json.dumps(doc, indent=2))
    OUT.print(f"wrote {args.out / 'sft.json'}")


if __name__ == "__main__":
    main()

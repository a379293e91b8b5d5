"""Prefect tasks of the fine-tuning stage: training rows, curriculum, rewards, logging.

The curriculum samples each candidate prompt K times with the current policy (one batched
Generator call), keeps the difficulty levels whose pass rate lies in the configured band,
and drops prompts whose K samples all earn the same combined reward: GRPO's advantage is
zero for such a group, so it carries no signal. Both counts are reported.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from domains.base import Case, Domain
from domains.errors import PonderError
from domains.rewards import combined_weights
from models.engine import Generator, SamplingConfig
from models.policy import RewardSpec
from tasks.context import StageContext
from tasks.infer import row_case

RewardFn = Callable[..., list[float | None]]


@task(cache_policy=NO_CACHE)  # the context is not a cache key
def training_rows(
    ctx: StageContext,
    *,
    version: str | None,
    family: str | None,
    difficulties: list[int] | None,
    tools: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Train-split cases as GRPO/SFT rows (prompt, case JSON, reference), and the version
    label ``vNNNNN:<content hash>`` (the work folder and lineage tags key on content)."""
    lake, domain = ctx.lake, ctx.domain
    info = (
        lake.info(domain.name, "cases", version) if version else lake.latest(domain.name, "cases")
    )
    if info is None:
        raise PonderError(
            "dataset", f"{domain.name}/cases has no versions", "run `ponder collect` first"
        )
    frame = pl.scan_parquet(info.path / "part-*.parquet").filter(pl.col("split") == "train")
    if family:
        frame = frame.filter(pl.col("family") == family)
    if difficulties:
        frame = frame.filter(pl.col("difficulty").is_in(difficulties))
    cases = [row_case(r) for r in frame.sort("id").collect().iter_rows(named=True)]
    label = f"{info.version}:{info.manifest['content_hash'][:12]}"
    return [row_of(domain, c, tools) for c in cases if c.reference], label


def row_of(domain: Domain, case: Case, tools: Sequence[str] | None = None) -> dict[str, Any]:
    """One training row; the prompt and reference follow the tools in use (the notation is
    stripped from the reference without the calculator)."""
    return {
        "prompt": domain.prompt(case, tools),
        "case": case.model_dump_json(),
        "reference": domain.reference(case, tools),
        "family": case.family,
        "difficulty": case.difficulty,
    }


def reward_setup(
    domain: Domain,
    learned: dict[str, str],
    weights: dict[str, float] | None,
    prm_aggregate: str = "min",
) -> RewardSpec:
    """The domain's reward parts plus the learned ones (``{"orm"|"prm": model dir}``), with
    one weight each. ``weights`` overrides the domain config (+0.5 per learned model); it
    must name exactly the parts in use."""
    names = [*domain.reward_parts, *learned]
    if weights is None:
        parts = combined_weights(domain, list(domain.reward_parts))
        weights = dict(zip(names, parts + [0.5] * len(learned), strict=True))
    elif set(weights) != set(names):
        raise PonderError(
            "reward_weights",
            f"weights name {sorted(weights)} but the reward parts are {names}",
            f"give exactly one weight for each of {names}",
        )
    return RewardSpec(
        domain=domain.name,
        weights={n: weights[n] for n in names},
        orm=learned.get("orm"),
        prm=learned.get("prm"),
        prm_aggregate=prm_aggregate,
    )


def combined(
    funcs: Sequence[RewardFn], weights: Sequence[float], prompts: list, texts: list, cases: list
) -> list[float]:
    """Weighted sum of the reward parts (None counts 0), as GRPO combines them."""
    total = [0.0] * len(texts)
    for f, w in zip(funcs, weights, strict=True):
        for i, v in enumerate(f(prompts=prompts, completions=texts, case=cases)):
            total[i] += w * (v or 0.0)
    return total


@task(cache_policy=NO_CACHE)
def curriculum(
    rows: list[dict[str, Any]],
    generator: Generator,
    domain: Domain,
    funcs: Sequence[RewardFn],
    *,
    weights: Sequence[float],
    samples: int,
    max_tokens: int,
    band: tuple[float, float],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows at the difficulties whose pass rate is inside ``band``, minus zero-variance
    groups; plus a report (pass rate per difficulty, what was dropped and why)."""
    params = SamplingConfig(n=samples, temperature=1.0, max_tokens=max_tokens, seed=0)
    outs = generator.generate([r["prompt"] for r in rows], params)
    stats = []
    for row, out in zip(rows, outs, strict=True):
        texts = [c.text for c in out.completions]
        case = Case.model_validate_json(row["case"])
        passed = [domain.check(t, case).correct for t in texts]
        rewards = combined(
            funcs, weights, [row["prompt"]] * len(texts), texts, [row["case"]] * len(texts)
        )
        stats.append(
            {
                "difficulty": row["difficulty"],
                "pass": statistics.mean(passed),
                "spread": statistics.pstdev(rewards),
            }
        )
    rates = _rates(stats)
    levels = [d for d, r in rates.items() if band[0] <= r <= band[1]] or [_fallback(rates)]
    keep = [
        r for r, s in zip(rows, stats, strict=True) if r["difficulty"] in levels and s["spread"] > 0
    ]
    report = {
        "pass_rate_by_difficulty": rates,
        "levels": levels,
        "in_band": any(band[0] <= r <= band[1] for r in rates.values()),
        "zero_variance_groups": sum(
            s["spread"] == 0 for r, s in zip(rows, stats, strict=True) if r["difficulty"] in levels
        ),
        "rows": len(keep),
    }
    return keep, report


def _rates(stats: list[dict[str, Any]]) -> dict[int, float]:
    by: dict[int, list[float]] = {}
    for s in stats:
        by.setdefault(s["difficulty"], []).append(s["pass"])
    return {d: statistics.mean(v) for d, v in sorted(by.items())}


def _fallback(rates: dict[int, float]) -> int:
    """No level in the band: the easiest level that is not yet solved, else the easiest."""
    unsolved = [d for d, r in rates.items() if r < 1.0]
    return min(unsolved or rates)


def accuracy(
    generator: Generator, domain: Domain, rows: list[dict[str, Any]], max_tokens: int
) -> dict[str, float]:
    """Greedy held-out accuracy and generated tokens per answer."""
    params = SamplingConfig(n=1, temperature=0.0, max_tokens=max_tokens)
    outs = generator.generate([r["prompt"] for r in rows], params)
    right = [
        domain.check(o.completions[0].text, Case.model_validate_json(r["case"])).correct
        for r, o in zip(rows, outs, strict=True)
    ]
    tokens = [len(o.completions[0].token_ids) for o in outs]
    return {
        "accuracy": statistics.mean(right) if right else 0.0,
        "tokens_per_answer": statistics.mean(tokens) if tokens else 0.0,
    }


def reward_curves(history: list[dict[str, Any]], names: list[str], path: Path) -> Path:
    """PNG of each reward part's mean per GRPO step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in [*names, "reward"]:
        key = "reward" if name == "reward" else f"rewards/{name}/mean"
        pts = [(h["step"], h[key]) for h in history if key in h]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".", label=name)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def config_hash(blob: dict[str, Any]) -> str:
    import hashlib

    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()

"""The evidence behind a promotion: two policies compared case by case on one eval set.

Both models' predictions (from the ``infer`` flow, same strategy, width and token cap) are
matched by case id. Accuracy, parse failures, tokens, latency and calibration (ECE) are
computed per side; the accuracy difference gets a paired bootstrap confidence interval
(``scipy.stats.bootstrap`` with ``paired=True``: cases are resampled together, so the
interval reflects the per-case differences, not two independent noise clouds). The gate
then promotes only when the interval clears the margin, no family drops by more than the
tolerance, and the cost stays under the ceiling; every check becomes a written reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from domains.errors import PonderError

SIDES = ("champion", "challenger")


class GateConfig(BaseModel):
    """When a challenger may replace the champion; validated at construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    margin: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="The CI's lower bound of (challenger - champion) accuracy must exceed it.",
    )
    family_tolerance: float = Field(
        default=0.05, ge=0, le=1, description="Largest accuracy drop allowed in any family."
    )
    max_cost_ratio: float = Field(
        default=1.5, gt=0, le=1000, description="Ceiling on challenger / champion tokens per case."
    )
    floor: float = Field(
        default=0.05, ge=0, le=1, description="Accuracy a first champion (none yet) must reach."
    )
    first_baseline: Literal["base", "none"] = Field(
        default="base",
        description="What a first challenger (no champion yet) is measured against: 'base', "
        "the base model it was fine-tuned from (the paired CI must clear the margin, as "
        "against a champion, and the floor applies too); 'none', the floor alone.",
    )
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="Confidence level of the bootstrap interval."
    )
    resamples: int = Field(default=2000, ge=100, le=100_000, description="Bootstrap resamples.")
    seed: int = Field(
        ge=0, le=2**32 - 1, default=0, description="Bootstrap seed (the decision is reproducible)."
    )


@dataclass
class Decision:
    """The gate's verdict and one line per check."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def side_metrics(frame: pl.DataFrame, bins: int = 10) -> dict[str, float]:
    """Accuracy, parse-failure rate, mean tokens and latency per case, and ECE."""
    correct = frame["correct"].cast(pl.Float64).to_numpy()
    return {
        "cases": float(frame.height),
        "accuracy": float(correct.mean()) if frame.height else 0.0,
        "parse_failure_rate": float((~frame["parsed"]).mean()) if frame.height else 0.0,
        "tokens_per_case": float(frame["tokens"].mean() or 0.0),
        "latency_s_per_case": float(frame["latency_s"].mean() or 0.0),
        "ece": ece(frame["confidence"].to_numpy(), correct, bins),
    }


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the case-weighted mean |accuracy - confidence| over
    equal-width confidence bins."""
    if len(confidence) == 0:
        return 0.0
    idx = np.minimum((np.asarray(confidence) * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(idx):
        mask = idx == b
        total += mask.sum() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total / len(confidence))


def pair(champion: pl.DataFrame, challenger: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Cases both models answered with a verdict, side by side; and how many were not
    matched (in one side only, e.g. too long for one model's context)."""
    cols = [
        "case_id",
        "family",
        "difficulty",
        "correct",
        "parsed",
        "tokens",
        "latency_s",
        "confidence",
    ]
    a = champion.filter(pl.col("correct").is_not_null()).select(cols)
    b = challenger.filter(pl.col("correct").is_not_null()).select(cols)
    joined = a.join(b, on=["case_id", "family", "difficulty"], suffix="_challenger")
    unmatched = a.height + b.height - 2 * joined.height
    if joined.height == 0:
        raise PonderError(
            "eval dataset",
            "no case has a verdict from both models",
            "use an eval version with labelled cases that fit both models' context",
        )
    return joined, unmatched


def split_sides(joined: pl.DataFrame) -> dict[str, pl.DataFrame]:
    keep = ["case_id", "family", "difficulty"]
    rest = [c for c in joined.columns if c not in keep and not c.endswith("_challenger")]
    return {
        "champion": joined.select(keep + rest),
        "challenger": joined.select(keep + [pl.col(f"{c}_challenger").alias(c) for c in rest]),
    }


def paired_bootstrap(
    champion: np.ndarray, challenger: np.ndarray, gate: GateConfig
) -> tuple[float, float, float]:
    """Mean accuracy difference (challenger - champion) and its paired bootstrap CI."""
    from scipy.stats import bootstrap

    a, b = champion.astype(float), challenger.astype(float)
    diff = float((b - a).mean())
    if np.all(b - a == (b - a)[0]):  # no spread: the interval is the point
        return diff, diff, diff
    res = bootstrap(
        (a, b),
        lambda x, y, axis: (y - x).mean(axis=axis),
        paired=True,
        vectorized=True,
        confidence_level=gate.confidence,
        n_resamples=gate.resamples,
        method="percentile",
        rng=np.random.default_rng(gate.seed),
    )
    return diff, float(res.confidence_interval.low), float(res.confidence_interval.high)


def by_group(sides: dict[str, pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    """Accuracy of each side per group (e.g. family, or family x difficulty), and the
    challenger's delta when both sides are there."""
    parts = [
        frame.group_by(keys).agg(
            pl.len().alias("cases"), pl.col("correct").cast(pl.Float64).mean().alias(side)
        )
        for side, frame in sides.items()
    ]
    table = parts[0]
    for part in parts[1:]:
        table = table.join(part.drop("cases"), on=keys)
    if all(side in table.columns for side in SIDES):
        table = table.with_columns((pl.col("challenger") - pl.col("champion")).alias("delta"))
    return table.sort(keys)


def decide(
    metrics: dict[str, dict[str, float]],
    ci: tuple[float, float, float],
    families: pl.DataFrame,
    gate: GateConfig,
) -> Decision:
    """Promote when the CI lower bound clears the margin, no family drops by more than the
    tolerance and tokens per case stay under the ceiling."""
    diff, low, high = ci
    pct = f"{gate.confidence:.0%}"
    ok_ci = low > gate.margin
    worst = families.sort("delta").row(0, named=True) if families.height else None
    ok_fam = worst is None or worst["delta"] >= -gate.family_tolerance
    champ_tok = metrics["champion"]["tokens_per_case"]
    ratio = metrics["challenger"]["tokens_per_case"] / champ_tok if champ_tok else 1.0
    ok_cost = ratio <= gate.max_cost_ratio
    reasons = [
        f"{_mark(ok_ci)} accuracy {diff:+.3f} (challenger - champion), {pct} paired bootstrap "
        f"CI [{low:+.3f}, {high:+.3f}]: lower bound {'>' if ok_ci else '<='} margin "
        f"{gate.margin:+.3f}",
        f"{_mark(ok_fam)} worst family "
        + (f"{worst['family']} {worst['delta']:+.3f}" if worst else "n/a")
        + f" (tolerance -{gate.family_tolerance:.3f})",
        f"{_mark(ok_cost)} tokens per case x{ratio:.2f} of the champion's "
        f"(ceiling x{gate.max_cost_ratio:.2f})",
    ]
    return Decision(ok_ci and ok_fam and ok_cost, reasons)


def decide_first(metrics: dict[str, float], gate: GateConfig) -> Decision:
    """No champion yet: the challenger must reach the absolute floor."""
    ok = metrics["accuracy"] >= gate.floor
    return Decision(
        ok,
        [
            f"{_mark(ok)} no champion yet: accuracy {metrics['accuracy']:.3f} "
            f"{'>=' if ok else '<'} floor {gate.floor:.3f}"
        ],
    )


def incumbent(summary: dict[str, Any]) -> str:
    """Who the challenger was measured against, in words."""
    if summary.get("champion"):
        return str(summary["champion"])
    base = summary.get("baseline")
    return f"none yet; compared with its base model {base}" if base else "none yet"


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def comparison_plot(table: pl.DataFrame, ci: tuple[float, float, float] | None, path: Path) -> Path:
    """Bars of per-family accuracy for both models; the title carries the paired CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 1.4 * table.height + 2), 3.6))
    x = np.arange(table.height)
    for i, side in enumerate(s for s in SIDES if s in table.columns):
        ax.bar(x + (i - 0.5) * 0.38, table[side].to_numpy() * 100, width=0.38, label=side)
    ax.set_xticks(x, [str(f) for f in table["family"].to_list()], rotation=20, fontsize=8)
    ax.set_ylabel("accuracy (%)")
    if ci:
        ax.set_title(f"challenger - champion: {ci[0]:+.1%} [{ci[1]:+.1%}, {ci[2]:+.1%}]")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def markdown(
    summary: dict[str, Any],
    metrics: dict[str, dict[str, float]],
    table: pl.DataFrame,
    plot_png: bytes | None = None,
) -> str:
    """The Prefect artifact: decision, reasons, the side-by-side metrics, the table, and
    the per-family plot inline (also in the MLflow run as plots/compare.png)."""
    head = "| metric | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics) + "\n"
    rows = "".join(
        f"| {k} | " + " | ".join(f"{m[k]:.4g}" for m in metrics.values()) + " |\n"
        for k in next(iter(metrics.values()))
    )
    cols = table.columns
    groups = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    groups += "".join(
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |\n"
        for r in table.iter_rows()
    )
    verdict = "PROMOTED" if summary["promoted"] else "not promoted"
    return (
        f"# evaluate_promote {summary['name']} v{summary['challenger']}: {verdict}\n\n"
        f"Champion: {incumbent(summary)}; eval set: {summary['dataset']} "
        f"({summary['cases']} matched cases, {summary['unmatched']} unmatched); "
        f"strategy {summary['strategy']}.\n\n"
        + "".join(f"- {r}\n" for r in summary["reasons"])
        + f"\n{head}{rows}\n### By family x difficulty\n\n{groups}"
        + (_inline_png(plot_png) if plot_png else "")
    )


def _inline_png(data: bytes) -> str:
    import base64

    return f"\n![per-family accuracy](data:image/png;base64,{base64.b64encode(data).decode()})\n"

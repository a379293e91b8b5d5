"""Reward parts as TRL reward functions: ``f(prompts, completions, **columns) -> list[float|None]``.

Each function reads the ``case`` column (a Case, its dict, or its JSON) that the training
dataset carries next to the prompt, so GRPO can call it directly. ``None`` means "not
applicable" (no truth or no reference for that row). Parts:
- correctness: the verifier's graded score (partial credit from set-F1 / relative error);
- format: `## Step k:` headers numbered 1..k plus a parseable Answer line;
- brevity: steps and length measured against the reference solution;
- efficiency: correctness per unit of length relative to the reference, discounted for
  failed or redundant calculator calls (the same expression computed twice).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from domains.parsing import step_headers

if TYPE_CHECKING:
    from domains.base import Case, Domain, RewardFn


def completion_text(completion: Any) -> str:
    """Text of a completion given as a string or as chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def as_case(value: Any) -> Case:
    from domains.base import Case

    if isinstance(value, Case):
        return value
    return Case.model_validate(json.loads(value) if isinstance(value, str) else value)


def format_score(domain: Domain, text: str, case: Case) -> float:
    from domains.base import ParseFailure

    steps = step_headers(text)
    steps_ok = bool(steps) and steps == list(range(1, len(steps) + 1))
    parsed = not isinstance(domain.parse(text, case), ParseFailure)
    return 0.5 * steps_ok + 0.5 * parsed


def _length(text: str) -> int:
    return max(len(text.split()), 1)


def brevity_score(text: str, reference: str) -> float:
    steps, ref_steps = len(step_headers(text)), len(step_headers(reference))
    if steps == 0:
        return 0.0
    return 0.5 * min(1.0, ref_steps / steps) + 0.5 * min(1.0, _length(reference) / _length(text))


def call_quality(text: str) -> float:
    """1 minus the share of calculator calls that failed or repeated an earlier expression
    (1 when the text makes no calls)."""
    from domains.calc import calls_in

    calls = calls_in(text)
    if not calls:
        return 1.0
    seen: set[str] = set()
    bad = 0
    for call in calls:
        key = "".join(call.expression.split())
        bad += (not call.ok) or key in seen
        seen.add(key)
    return 1.0 - bad / len(calls)


def efficiency_score(text: str, reference: str, correctness: float) -> float:
    """Correctness, scaled down for length beyond 1.5x the reference and for bad calls."""
    ratio = min(1.0, 1.5 * _length(reference) / _length(text))
    return correctness * ratio * call_quality(text)


def reward_functions(domain: Domain) -> dict[str, RewardFn]:
    """The four parts bound to a domain, keyed and ``__name__``-d by part."""

    def correctness(prompts: list, completions: list, case: list, **kwargs: Any) -> list:
        out: list[float | None] = []
        for comp, raw in zip(completions, case, strict=True):
            c = as_case(raw)
            out.append(None if c.truth is None else domain.check(completion_text(comp), c).score)
        return out

    def format(prompts: list, completions: list, case: list, **kwargs: Any) -> list:  # noqa: A001
        return [
            format_score(domain, completion_text(comp), as_case(raw))
            for comp, raw in zip(completions, case, strict=True)
        ]

    def brevity(prompts: list, completions: list, case: list, **kwargs: Any) -> list:
        out: list[float | None] = []
        for comp, raw in zip(completions, case, strict=True):
            ref = as_case(raw).reference
            out.append(None if not ref else brevity_score(completion_text(comp), ref))
        return out

    def efficiency(prompts: list, completions: list, case: list, **kwargs: Any) -> list:
        out: list[float | None] = []
        for comp, raw in zip(completions, case, strict=True):
            c, text = as_case(raw), completion_text(comp)
            if c.truth is None or not c.reference:
                out.append(None)
                continue
            out.append(efficiency_score(text, c.reference, domain.check(text, c).score))
        return out

    return {
        "correctness": correctness,
        "format": format,
        "brevity": brevity,
        "efficiency": efficiency,
    }


def combined_weights(domain: Domain, names: list[str]) -> list[float]:
    """Weights for ``names`` from the domain config; every name must have one."""
    from domains.errors import PonderError

    missing = [n for n in names if n not in domain.reward_weights]
    if missing:
        raise PonderError(
            "reward_weights",
            f"no weight for {missing}",
            f"set weights for exactly {names} in the domain config",
        )
    return [domain.reward_weights[n] for n in names]

"""Shared pieces of every search strategy: config, problem, result, scorers, expansion.

Every strategy has the signature ``run(problems, cfg, generator, scorer) -> list[SearchResult]``
(search-and-learn's convention) and one budget meaning: ``width`` N (samples, beams or
rollouts) plus ``max_tokens`` generated per problem. ``expand`` is the engine discipline:
the frontier nodes of *all* problems go to the Generator in *one* call, siblings are drawn
with ``n=k`` on one request, prompts are token ids (prefix + generated ids, never
re-rendered text), duplicate siblings are dropped and length-truncated steps are marked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from domains.calc import LIMITS
from models.engine import Generator, SamplingConfig
from models.search.tree import Node, ThoughtTree

STEP_STOP = "\n\n"


class SearchConfig(BaseModel):
    """The budget and switches of a search; validated at construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(default=4, ge=1, le=256, description="N: samples, beams or rollouts.")
    branch: int = Field(default=2, ge=1, le=32, description="k: proposals per beam per depth.")
    max_tokens: int = Field(default=1024, ge=16, description="Generated-token cap per problem.")
    step_tokens: int = Field(default=128, ge=8, description="Cap on one step's tokens.")
    max_depth: int = Field(default=8, ge=1, le=64, description="Most steps on one path.")
    temperature: float = Field(default=0.8, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus mass.")
    seed: int = Field(default=0, description="Sampling seed.")
    score_agg: Literal["last", "min", "prod"] = Field(
        default="last", description="Path score from step scores."
    )
    answer_agg: Literal["naive", "weighted", "majority"] = Field(
        default="weighted", description="How completions vote for the final answer."
    )
    simulations: int = Field(default=8, ge=1, le=512, description="MCTS iterations.")
    c_puct: float = Field(default=1.5, gt=0.0, description="MCTS exploration constant.")
    select_by: Literal["visits", "value"] = Field(
        default="visits", description="MCTS final choice."
    )


class Problem(BaseModel):
    """One case as search sees it: a prompt and a way to read an answer key from text."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    prompt: list[dict[str, str]] | list[int]
    answer_of: Callable[[str], str | None] = Field(
        description="Canonical answer key of a completion's text, or None if unparseable."
    )


class SearchResult(BaseModel):
    """The chosen answer, its confidence, and the whole tree."""

    problem_id: str
    strategy: str
    answer: str | None = Field(description="Chosen answer key (None: nothing parsed).")
    text: str = Field(description="Full text of the chosen path.")
    confidence: float = Field(ge=0.0, le=1.0)
    tokens_generated: int
    generator_calls: int = Field(default=0, description="Generator calls for the whole batch.")
    scorer: str
    oracle: bool = Field(description="True when an oracle (label-using) scorer chose it.")
    tree: ThoughtTree


class StepScorer(Protocol):
    """Scores each step of a path in [0, 1]."""

    name: str
    oracle: bool

    def score(self, problem: Problem, steps: list[Node], text: str) -> list[float]: ...


class OutcomeScorer(Protocol):
    """Scores whole completions in [0, 1]."""

    name: str
    oracle: bool

    def score_outcomes(
        self, problem: Problem, texts: list[str], paths: list[list[Node]]
    ) -> list[float]: ...


class Scorer(StepScorer, OutcomeScorer, Protocol):
    """Both interfaces (what every built-in scorer implements)."""


def score_paths(
    scorer: StepScorer, items: Sequence[tuple[Problem, list[Node], str]]
) -> list[list[float]]:
    """Step scores of many paths: one batched pass when the scorer has ``score_paths``
    (the learned reward models do), else one ``score`` call per path."""
    batched = getattr(scorer, "score_paths", None)
    if batched is not None:
        return batched(items)
    return [scorer.score(p, steps, text) for p, steps, text in items]


def score_nodes(scorer: Scorer, entries: Sequence[tuple[Problem, ThoughtTree, Node]]) -> None:
    """Set ``prm_score`` on new nodes of many problems: open steps in one batched step-scorer
    pass, terminal ones with the outcome scorer (one call per problem)."""
    open_ = [(p, t, n) for p, t, n in entries if not n.terminal]
    scores = score_paths(scorer, [(p, t.path(n), t.text(n)) for p, t, n in open_])
    for (_, _, node), s in zip(open_, scores, strict=True):
        node.prm_score = s[-1] if s else 0.0
    ends: dict[str, list[tuple[Problem, ThoughtTree, Node]]] = {}
    for p, t, n in entries:
        if n.terminal:
            ends.setdefault(p.id, []).append((p, t, n))
    for group in ends.values():
        p, t = group[0][0], group[0][1]
        out = scorer.score_outcomes(
            p, [t.text(n) for _, _, n in group], [t.path(n) for _, _, n in group]
        )
        for (_, _, node), s in zip(group, out, strict=True):
            node.prm_score = s


def sampling(cfg: SearchConfig, n: int, max_tokens: int, stop: bool) -> SamplingConfig:
    return SamplingConfig(
        n=n,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=max(1, max_tokens),
        seed=cfg.seed,
        stop=[STEP_STOP] if stop else [],
    )


def expand(
    generator: Generator,
    problems: Sequence[Problem],
    trees: Sequence[ThoughtTree],
    picks: Sequence[tuple[int, Node, int]],
    *,
    cfg: SearchConfig,
    per_step: bool,
) -> list[list[Node]]:
    """Grow every pick ``(problem index, node, k)`` by k children in ONE Generator call and
    return the new children per pick (duplicates dropped). ``per_step`` stops at the step
    boundary; otherwise each of the k completions gets an equal share of what is left of the
    problem's token budget."""
    if not picks:
        return []
    left = [
        (cfg.max_tokens - trees[i].tokens_generated) // (1 if per_step else k) for i, _, k in picks
    ]
    groups: dict[int, list[int]] = {}
    for j, (_, _, k) in enumerate(picks):
        groups.setdefault(k, []).append(j)
    out: list[list[Node]] = [[] for _ in picks]
    for k, idxs in groups.items():  # one call per distinct k (a single call in practice)
        cap = min(
            cfg.step_tokens if per_step else cfg.max_tokens, max(min(left[j] for j in idxs), 1)
        )
        prompts = [trees[picks[j][0]].token_ids(picks[j][1]) for j in idxs]
        results = generator.generate(prompts, sampling(cfg, k, cap, per_step))
        per_path = getattr(generator, "limits", LIMITS).per_path
        for j, res in zip(idxs, results, strict=True):
            i, parent, _ = picks[j]
            out[j] = _add_children(
                trees[i],
                parent,
                res.completions,
                cfg,
                answer_of=problems[i].answer_of,
                per_step=per_step,
                per_path=per_path,
            )
    return out


def _add_children(
    tree: ThoughtTree,
    parent: Node,
    completions: list,
    cfg: SearchConfig,
    *,
    answer_of: Callable[[str], str | None],
    per_step: bool,
    per_path: int = LIMITS.per_path,
) -> list[Node]:
    seen: set[tuple[int, ...]] = set()
    kids = []
    before = sum(len(n.calls) for n in tree.path(parent))
    for c in completions:
        key = tuple(c.token_ids)
        if key in seen or not c.token_ids:
            continue  # duplicate sibling, or nothing generated
        seen.add(key)
        text = tree.text(parent) + c.text
        ended = not (per_step and c.finish_reason == "stop" and c.text.endswith(STEP_STOP))
        over = before + len(c.calls) > per_path
        stop_reason = "calculator call limit (path)" if over else c.stop_reason
        terminal = (
            ended or over or bool(c.stop_reason) or "Answer:" in c.text
        ) or parent.depth + 1 >= cfg.max_depth
        kids.append(
            tree.add(
                parent,
                text=c.text,
                token_ids=list(c.token_ids),
                n_tokens=len(c.token_ids),
                finish_reason=c.finish_reason,
                logprob=c.cumulative_logprob,
                terminal=terminal,
                answer=answer_of(text) if terminal else None,
                calls=c.calls,
                n_inserted=c.n_inserted,
                stop_reason=stop_reason,
            )
        )
    return kids


def vote(answers: list[str | None], scores: list[float], how: str) -> tuple[int, float]:
    """Index of the chosen completion and its confidence under naive/weighted/majority.

    naive: the highest score. weighted/majority: the answer with the most score mass (or
    votes), ties broken by that answer's best score; ``None`` answers carry no vote but count
    in the mass. All-``None`` falls back to the highest score with confidence 0."""
    if not answers:
        return -1, 0.0
    if how == "naive":
        best = max(range(len(scores)), key=lambda i: scores[i])
        return best, float(min(max(scores[best], 0.0), 1.0))
    weights = [1.0 if how == "majority" else max(s, 0.0) for s in scores]
    totals: dict[str, float] = {}
    top: dict[str, float] = {}  # each answer's best path score, for ties
    for a, w, s in zip(answers, weights, scores, strict=True):
        if a is not None:
            totals[a] = totals.get(a, 0.0) + w
            top[a] = max(top.get(a, s), s)
    if not totals:
        best = max(range(len(scores)), key=lambda i: scores[i])
        return best, 0.0
    winner = max(totals, key=lambda a: (totals[a], top[a]))  # a tie goes to the best path
    mass = sum(weights) or 1.0
    best = max((i for i, a in enumerate(answers) if a == winner), key=lambda i: scores[i])
    return best, float(min(totals[winner] / mass, 1.0))

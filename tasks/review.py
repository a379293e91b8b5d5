"""The review queue: after each infer run, the cases that most need a person go to MLflow.

Which cases: wrong against the truth first (where the case has one), then the cases whose
search paths disagree most with the chosen answer, then the least confident. Their traces
are attached to a review queue named after the domain, in the traces' experiment
(``ponder-traces``), through MLflow's review-queue API (``mlflow.genai.review_queues``,
MLflow >= 3.14; the OSS server stores queues in its tracking database). Reviewers answer
with assessments on the trace: an overall verdict, and per step span ``correct`` / ``wrong``
or ``first_wrong_step``; ``collect``'s MLflow source reads them back.

A tracking server without review queues, or a queue that cannot be filled, is a warning that
names the fix: infer's predictions are committed before this runs and are never lost here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from models.search.tree import ThoughtTree
from tasks.context import StageContext

log = logging.getLogger(__name__)


class QueueFill(BaseModel):
    """What one infer run added to its domain's review queue."""

    model_config = ConfigDict(extra="forbid")

    queue: str = Field(description="The queue's name (the domain).")
    queue_id: str = Field(description="MLflow's id of the queue.")
    experiment_id: str = Field(description="The experiment the queue belongs to.")
    added: int = Field(description="Traces attached by this run (already attached ones kept).")


def disagreement(tree: ThoughtTree | None, answer: str | None) -> float:
    """Share of the tree's finished paths whose answer differs from the chosen one."""
    if tree is None:
        return 0.0
    answers = [leaf.answer for leaf in tree.leaves() if leaf.terminal]
    if not answers:
        return 0.0
    return sum(a != answer for a in answers) / len(answers)


def needs_review(
    frame: pl.DataFrame, trees: dict[str, ThoughtTree] | None = None, *, k: int
) -> list[str]:
    """The ``k`` case ids that most need a person, most needy first: wrong against the
    truth, then paths that disagree with the chosen answer, then low confidence. The
    disagreement is the frame's ``disagreement`` column (infer writes it per shard, so no
    tree is loaded here); older predictions without it compute it from ``trees``."""
    if k <= 0 or frame.is_empty():
        return []
    if "disagreement" in frame.columns:
        split = frame["disagreement"].fill_null(0.0).to_list()
    else:
        split = [
            disagreement((trees or {}).get(c), a)
            for c, a in zip(frame["case_id"], frame["answer"], strict=True)
        ]
    ranked = frame.with_columns(
        (pl.col("correct") == False).fill_null(False).alias("_wrong"),  # noqa: E712
        pl.Series("_split", split),
    ).sort(["_wrong", "_split", "confidence", "case_id"], descending=[True, True, False, False])
    return ranked["case_id"].head(k).to_list()


@task(cache_policy=NO_CACHE)  # not retried: attaching is idempotent, but a retry hides a cause
def fill_review_queue(ctx: StageContext, *, traces: dict[str, str]) -> QueueFill | None:
    """Attach the traces (case id -> trace id) to the domain's review queue, creating the
    queue on first use. Returns None, with a warning naming the fix, when it cannot."""
    if not traces:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return _fill(ctx.name, list(traces.values()))
    except MlflowException as err:
        log.warning(
            "review queue %r not filled (%s): infer's results are saved; to review, run an "
            "MLflow >= 3.14 tracking server (`mlflow server`) and point PONDER_TRACKING_URI at "
            "it, then rerun `ponder infer` or attach the traces in the MLflow UI",
            ctx.name,
            err.message.splitlines()[0][:200],
        )
        return None


def queue_items(queue_id: str) -> dict[str, Any]:
    """Every item of a queue (all pages), by item id."""
    from mlflow.genai import review_queues as rq

    pages = _every_page(
        lambda token: rq.list_review_queue_items(queue_id, max_results=500, page_token=token)
    )
    return {i.item_id: i for i in pages}


def _every_page(fetch: Callable[[str | None], Any]) -> list[Any]:
    """Everything a paged MLflow listing returns, page after page."""
    out: list[Any] = []
    token = None
    while True:
        page = fetch(token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _fill(domain: str, trace_ids: list[str]) -> QueueFill:
    from mlflow.exceptions import MlflowException
    from mlflow.genai import review_queues as rq

    from models.registry import TRACE_EXPERIMENT, ensure_experiment

    experiment = ensure_experiment(TRACE_EXPERIMENT)
    try:
        queue = rq.get_review_queue(name=domain, experiment_id=experiment)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        queue = rq.create_review_queue(domain, queue_type="custom", experiment_id=experiment)
    before = set(queue_items(queue.queue_id))
    rq.add_items_to_review_queue(queue.queue_id, item_ids=trace_ids)
    return QueueFill(
        queue=domain,
        queue_id=queue.queue_id,
        experiment_id=experiment,
        added=len(set(trace_ids) - before),
    )


class QueueStatus(BaseModel):
    """Where one review queue stands (``ponder review``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The queue's name (a domain, or a reviewer's own queue).")
    pending: int = Field(description="Items no reviewer has finished.")
    complete: int = Field(description="Items a reviewer finished.")
    declined: int = Field(description="Items a reviewer declined.")
    by_reviewer: dict[str, int] = Field(description="Finished items per reviewer.")
    url: str | None = Field(description="The queue in the MLflow UI (a tracking server only).")


def queue_status(domain: str | None = None) -> list[QueueStatus]:
    """Every review queue of the traces' experiment (or only ``domain``'s), with counts."""
    from mlflow.genai import review_queues as rq

    from models.registry import TRACE_EXPERIMENT, ensure_experiment, ui_address

    experiment = ensure_experiment(TRACE_EXPERIMENT)
    page = ui_address(experiment)
    url = f"{page}/review-queue" if page else None
    out = []
    queues = _every_page(
        lambda token: rq.list_review_queues(experiment_id=experiment, page_token=token)
    )
    for queue in queues:
        if domain is not None and queue.name != domain:
            continue
        items = list(queue_items(queue.queue_id).values())
        counts = {s: sum(str(i.status) == s for i in items) for s in ("pending", "complete")}
        done_by: dict[str, int] = {}
        for i in items:
            if i.completed_by and str(i.status) == "complete":
                done_by[i.completed_by] = done_by.get(i.completed_by, 0) + 1
        declined = len(items) - counts["pending"] - counts["complete"]
        out.append(QueueStatus(name=queue.name, **counts, declined=declined, by_reviewer=done_by,
                               url=url))  # fmt: skip
    return out

"""One infer run across several Prefect workers: the parent's side of the fan-out.

A parent infer run (``workers`` > 1) submits its shards as child flow runs of the domain's
infer deployment with ``run_deployment``, on that deployment's pool, so each child starts its
own engine on its worker. Prefect's own parts do the work:

- **at most N at once**: a global concurrency limit per run key (``limit_name``) with N slots;
  each child holds a slot, by lease, while it searches (a killed child's lease runs out);
- **states**: the parent polls its children's flow-run states. A CRASHED child (its process
  or worker died; ``ponder serve`` installs the automation that marks runs crashed when their
  heartbeats stop) is submitted again, up to a bound, and the worker that picks it up reuses
  the shards it finished. A FAILED or CANCELLED child fails the parent with its name;
- **tags**: every child carries ``ponder-run:<run key>``. A new parent of the same run cancels
  the older children it finds, so a parent killed with -9 leaves nothing running for long.

Fencing (``claim``/``fenced``): the parent writes its epoch (its flow run id) into the run
folder before it submits, and ``committed <version>`` after the commit. A child writes a
shard only while the folder still names its parent's epoch, so an orphan of an older parent,
or a zombie child of this one, never writes after a new parent took over or committed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from domains.errors import PonderError
from tasks.lake import tmp_beside

FENCE = "_epoch"
LEASE_S = 60  # Prefect's shortest slot lease: a killed child frees its slot within a minute


def run_tag(key: str) -> str:
    """The tag every child of run ``key`` carries (and the key of older children to cancel)."""
    return f"ponder-run:{key}"


def limit_name(key: str) -> str:
    """The global concurrency limit that caps run ``key``'s children running at once."""
    return f"ponder-infer-{key}"


def default_deployment(domain: str) -> str:
    """The domain's infer deployment as ``deployments/prefect.yaml`` names it."""
    return f"infer/infer-{domain.replace('_', '-')}"


def find_deployment(name: str) -> tuple[UUID | None, str]:
    """(deployment id, "") when a Prefect server is configured and holds ``name``; else
    (None, why), so that the caller can say why it runs in-process."""
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return None, "no Prefect server is configured (PREFECT_API_URL is unset)"
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            return client.read_deployment_by_name(name).id, ""
    except ObjectNotFound:
        return None, f"the Prefect server has no deployment {name!r} (run `ponder deploy`)"
    except Exception as err:  # noqa: BLE001 - any transport error means "no server here"
        return None, f"the Prefect server did not answer ({type(err).__name__})"


def claim(out_dir: Path, epoch: str) -> None:
    """Make ``epoch`` the only one whose children may write into ``out_dir`` (atomic)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FENCE
    tmp = tmp_beside(path)
    tmp.write_text(epoch)
    os.replace(tmp, path)


def fenced(out_dir: Path, epoch: str | None) -> bool:
    """Whether a child of ``epoch`` must not write into ``out_dir`` any more (None: an
    in-process run, never fenced)."""
    if epoch is None:
        return False
    try:
        return (out_dir / FENCE).read_text() != epoch
    except OSError:
        return True


def split_children(n_shards: int, workers: int) -> list[list[int]]:
    """Contiguous shard blocks, one child each: ``workers`` children (fewer when there are
    fewer shards), so each worker starts its engine once."""
    n = max(1, min(workers, n_shards))
    size, extra = divmod(n_shards, n)
    blocks, start = [], 0
    for i in range(n):
        stop = start + size + (1 if i < extra else 0)
        blocks.append(list(range(start, stop)))
        start = stop
    return blocks


def cancel_older(key: str, *, keep: str | None) -> int:
    """Cancel every unfinished child of run ``key`` (an older parent's orphans); returns how
    many. The worker that runs a cancelled child stops its process."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[run_tag(key)]))
        )
        older = [r for r in runs if str(r.id) != keep and r.state and not r.state.is_final()]
        for run in older:
            client.set_flow_run_state(run.id, Cancelling(message="a newer parent took over"))
    return len(older)


@dataclass
class Children:
    """The children of one parent: what each searches, its current run, its attempts."""

    deployment: UUID
    key: str
    blocks: dict[str, list[int]]  # child name -> the shard indices it searches
    params_for: Callable[[list[int]], dict[str, Any]]
    retries: int
    poll_s: float = 2.0
    runs: dict[str, UUID] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)

    def submit(self, name: str) -> None:
        """Start (or start again) child ``name`` without waiting for it."""
        from prefect.deployments import run_deployment

        self.attempts[name] = self.attempts.get(name, 0) + 1
        run = run_deployment(
            self.deployment,
            parameters={"params": self.params_for(self.blocks[name])},
            timeout=0,
            tags=[run_tag(self.key), f"ponder-child:{name}"],
            flow_run_name=f"{name}-try{self.attempts[name]}",
        )
        self.runs[name] = run.id

    def wait(self, on_done: Callable[[int, int], None] = lambda done, total: None) -> None:
        """Until every child completed: a crashed one is submitted again (up to ``retries``
        more times); a failed or cancelled one, or one crashed too often, raises."""
        from prefect.client.orchestration import get_client

        pending = set(self.runs)
        with get_client(sync_client=True) as client:
            while pending:
                time.sleep(self.poll_s)
                for name in sorted(pending):
                    state = client.read_flow_run(self.runs[name]).state
                    if state is None or not state.is_final():
                        continue
                    if state.is_completed():
                        pending.discard(name)
                        on_done(len(self.runs) - len(pending), len(self.runs))
                    elif state.is_crashed() and self.attempts[name] <= self.retries:
                        self.submit(name)
                    else:
                        raise PonderError(
                            "workers",
                            f"child {name} (shards {self.blocks[name]}) ended {state.type.value}"
                            f" after {self.attempts[name]} attempt(s): {state.message}",
                            "read its flow-run logs in the Prefect UI; rerun infer with the "
                            "same parameters to reuse every finished shard",
                        )

    def cancel_unfinished(self) -> None:
        """Cancel the children still running (the parent is failing)."""
        cancel_older(self.key, keep=None)


def ensure_limit(key: str, workers: int) -> None:
    """The run's global concurrency limit with ``workers`` slots (created or updated)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(limit_name(key), workers)


def drop_limit(key: str) -> None:
    """Remove the run's concurrency limit once its children are done."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_global_concurrency_limit_by_name(limit_name(key))

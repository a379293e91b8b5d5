"""MLflow runs that say the truth after a ``kill -9``.

A process killed mid-run never ends its MLflow run, so the UI shows it RUNNING forever and
nobody can tell a dead run from a live one. Every ponder run is started through
``tracked_run``: it tags the run with the host and pid that own it, and before starting it
looks for runs of the same name still RUNNING whose owner is dead on this host. Those are
marked FAILED (tag ``ponder.killed``), and the new run links them (tag ``ponder.resumes``)
or, when it reopens the same run id (finetune resumes its own run), counts the attempt.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

HOST_TAG, PID_TAG = "ponder.host", "ponder.pid"
log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def orphaned(run: Any) -> bool:
    """A RUNNING run whose owning process, on this host, no longer exists."""
    tags = run.data.tags
    if run.info.status != "RUNNING" or tags.get(HOST_TAG) != socket.gethostname():
        return False
    pid = tags.get(PID_TAG, "")
    return pid.isdigit() and not _alive(int(pid))


def close_orphans(client: Any, experiment_id: str, run_name: str) -> list[str]:
    """Mark this experiment's orphaned runs named ``run_name`` FAILED; their ids."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and attributes.run_name = '{run_name}'",
        max_results=50,
    )
    closed = []
    for run in filter(orphaned, runs):
        stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        client.set_tag(run.info.run_id, "ponder.killed", f"owner pid gone; closed {stamp}")
        client.set_terminated(run.info.run_id, status="FAILED")
        closed.append(run.info.run_id)
    return closed


@contextlib.contextmanager
def tracked_run(
    run_name: str,
    experiment_id: str | None = None,
    run_id: str | None = None,
    nested: bool = False,
) -> Iterator[Any]:
    """``mlflow.start_run`` that first closes orphans of the same name and then links them;
    a run that raises is ended FAILED (``_end_quietly``)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    if run_id is not None:  # reopening a run: its own experiment
        try:
            experiment_id = client.get_run(run_id).info.experiment_id
        except MlflowException:  # recorded against another tracking store: start afresh
            log.warning("run %s is not in this tracking store; starting a new run", run_id)
            run_id = None
    exp = experiment_id or _current_experiment()
    closed = close_orphans(client, exp, run_name) if exp else []
    kwargs: dict[str, Any] = {"run_name": run_name, "nested": nested}
    if run_id is None:
        kwargs["experiment_id"] = exp
    run = mlflow.start_run(run_id=run_id, **kwargs)
    try:
        tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
        if run.info.run_id in closed:
            attempts = int(run.data.tags.get("ponder.attempts", "1")) + 1
            tags["ponder.attempts"] = str(attempts)
        elif closed:
            tags["ponder.resumes"] = ",".join(closed)
        mlflow.set_tags(tags)
        yield run
    except BaseException:
        _end_quietly(run.info.run_id)
        raise
    mlflow.end_run()


def _end_quietly(run_id: str) -> None:
    """Mark the run FAILED; when the tracking server is what failed, say so and keep the
    original error (the next run on this host closes the orphan)."""
    import mlflow

    try:
        mlflow.end_run(status="FAILED")
    except Exception as err:  # noqa: BLE001 - never mask the error that ended the run
        log.warning("could not mark run %s FAILED (%s); the next run will", run_id, err)


def _current_experiment() -> str | None:
    """The experiment ``mlflow.start_run`` would use (set_experiment, env, or default)."""
    from mlflow.tracking.fluent import _get_experiment_id

    return _get_experiment_id()

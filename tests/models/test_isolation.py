"""run_isolated: a fresh process with the given environment; a dead child is a clear error."""

from __future__ import annotations

import os

import pytest

from domains.errors import PonderError
from models.isolation import run_isolated


def test_runs_in_another_process_with_the_environment() -> None:
    assert run_isolated(os.getpid) != os.getpid()
    assert (
        run_isolated(os.getenv, "PONDER_ISOLATION_PROBE", env={"PONDER_ISOLATION_PROBE": "7"})
        == "7"
    )


def test_a_dead_child_is_a_clear_error() -> None:
    waits: list[int] = []
    with pytest.raises(PonderError, match="died") as err:
        run_isolated(os._exit, 3, on_wait=lambda: waits.append(1), poll_s=0.05)
    assert "resume=True" in str(err.value)


def test_the_parent_reports_while_it_waits() -> None:
    import time

    waits: list[int] = []
    run_isolated(time.sleep, 1.0, on_wait=lambda: waits.append(1), poll_s=0.05)
    assert len(waits) >= 3, "on_wait runs every poll while the child works"

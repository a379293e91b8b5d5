"""Run one function in a fresh spawned process, so the memory it takes goes back at exit.

CUDA contexts and vLLM's colocated engine free their memory only when the process that
made them exits; a flow that trains on GPU and then serves or evaluates in the same
process would otherwise hold both. ``run_isolated`` spawns (never forks: a forked CUDA or
OpenMP runtime is unsafe), passes environment overrides to the child, calls ``on_wait``
while it waits (progress reporting), and turns a dead child into a clear error.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from domains.errors import PonderError

T = TypeVar("T")


def _set_env(env: dict[str, str]) -> None:
    os.environ.update(env)


def run_isolated(
    fn: Callable[..., T],
    *args: Any,
    env: dict[str, str] | None = None,
    on_wait: Callable[[], None] | None = None,
    poll_s: float = 5.0,
    what: str = "training",
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)`` in a spawned child process; its result (pickled) comes back.
    ``fn`` and its arguments must be picklable (top-level functions, plain data); ``what``
    names the work in the error raised when the child dies."""
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(
        1, mp_context=ctx, initializer=_set_env, initargs=(env or {},)
    ) as pool:
        future = pool.submit(fn, *args, **kwargs)
        while True:
            try:
                return future.result(timeout=poll_s)
            except FutureTimeout:
                if on_wait is not None:
                    on_wait()
            except BrokenProcessPool as err:
                raise PonderError(
                    what,
                    f"the {what} process for {getattr(fn, '__name__', fn)} died "
                    "(killed, or out of memory)",
                    "check memory and the log above; rerun with resume=True to continue "
                    "from the latest checkpoint",
                ) from err

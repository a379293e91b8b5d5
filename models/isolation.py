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
import threading
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


def run_job(
    fn: Callable[..., T],
    *args: Any,
    isolate: bool,
    env: dict[str, str] | None = None,
    on_wait: Callable[[], None] | None = None,
    **kwargs: Any,
) -> T:
    """One path for a job that may run isolated: ``fn(*args, **kwargs)`` in a spawned child
    (``isolate``) or here; either way ``on_wait`` is called every few seconds while it runs
    (here from a helper thread), so progress is reported through the same channel."""
    if isolate:
        return run_isolated(fn, *args, env=env, on_wait=on_wait, **kwargs)
    if on_wait is None:
        return fn(*args, **kwargs)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(5.0):
            on_wait()

    watcher = threading.Thread(target=poll, name="ponder-progress", daemon=True)
    watcher.start()
    try:
        return fn(*args, **kwargs)
    finally:
        stop.set()
        watcher.join()
        on_wait()

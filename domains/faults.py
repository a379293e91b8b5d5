"""Failpoints: named places where a fault test makes a real process die or a write fail.

The reliability suite (``make reliability``) needs faults at exact moments: a ``kill -9``
after the second inference shard, a full disk while a dataset version is written. Sleeping
and then killing from outside hits a random moment and makes the tests flaky, so the code
names its dangerous moments with ``failpoint("infer.shard")`` and the test arms one through
the environment, as FoundationDB and TiKV do:

    PONDER_FAILPOINTS="infer.shard=kill@2,lake.write=enospc"

Each entry is ``name=action[@hit]``: the action fires on the ``hit``-th time (default 1)
this process reaches the point. Actions: ``kill`` (SIGKILL to this process: no handler,
no cleanup, exactly a ``kill -9``), ``enospc`` (an OSError "No space left on device",
what a full disk raises), ``raise`` (a RuntimeError) and ``pause`` (wait there until the
test, having broken something outside such as a server, says go). Unset, a failpoint costs one dict
lookup and does nothing.
"""

from __future__ import annotations

import errno
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ENV = "PONDER_FAILPOINTS"
_hits: Counter[str] = Counter()


def _kill(name: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _enospc(name: str) -> None:
    raise OSError(errno.ENOSPC, f"No space left on device (failpoint {name})")


def _raise(name: str) -> None:
    raise RuntimeError(f"failpoint {name}")


def _pause(name: str) -> None:
    """Wait at the point until the test says go: it writes ``<name>.reached`` into
    ``PONDER_FAILPOINT_DIR`` and waits (5 minutes at most) for ``<name>.go`` there, so a
    test can break something outside (stop a server) at exactly this moment."""
    folder = Path(os.environ.get("PONDER_FAILPOINT_DIR", tempfile.gettempdir()))
    (folder / f"{name}.reached").write_text(str(os.getpid()))
    deadline = time.monotonic() + 300
    while not (folder / f"{name}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


ACTIONS: dict[str, Callable[[str], None]] = {
    "kill": _kill,
    "enospc": _enospc,
    "raise": _raise,
    "pause": _pause,
}


def armed(spec: str | None = None) -> dict[str, tuple[str, int]]:
    """The armed failpoints, ``name -> (action, hit)``, from ``spec`` or the environment.
    A malformed entry is an error naming the variable and the expected form."""
    spec = os.environ.get(ENV, "") if spec is None else spec
    points: dict[str, tuple[str, int]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, rest = entry.partition("=")
        action, _, hit = rest.partition("@")
        if not name or action not in ACTIONS or (hit and not hit.isdigit()) or hit == "0":
            raise ValueError(
                f"{ENV}: bad entry {entry!r}; write name=action[@hit] with action one of "
                f"{sorted(ACTIONS)} and hit a positive integer"
            )
        points[name] = (action, int(hit or 1))
    return points


def failpoint(name: str) -> None:
    """Fire the fault armed for ``name`` when this is its hit; otherwise do nothing."""
    if ENV not in os.environ:
        return
    point = armed().get(name)
    if point is None:
        return
    _hits[name] += 1
    action, hit = point
    if _hits[name] == hit:
        ACTIONS[action](name)

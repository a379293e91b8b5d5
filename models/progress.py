"""Where a run is, for the console: one small JSON file that the CLI's live display polls.

Stages run in this process, in Prefect subflows and in spawned children (``isolate``), and
their library output goes to a log file, not the terminal. So instead of printing, work
reports here: ``stage()`` when a stage starts, ``step()`` as it advances (cases scored,
training steps). Each call replaces the file named by ``$PONDER_PROGRESS_FILE`` atomically;
children inherit the variable. Without it (library use, tests) every call is a no-op.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV = "PONDER_PROGRESS_FILE"


def _path() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def read() -> dict[str, Any]:
    """The latest report ({} when there is none or it is being replaced)."""
    path = _path()
    try:
        return json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return {}


def _write(update: dict[str, Any]) -> None:
    path = _path()
    if path is None:
        return
    state = read() | update | {"t": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
    except OSError:  # progress is a convenience: never fail the work over it
        tmp.unlink(missing_ok=True)


def stage(name: str, index: int = 1, total: int = 1) -> None:
    """Stage ``index`` of ``total`` (1-based) starts; its step count resets."""
    _write({"stage": name, "index": index, "total": total, "part": "", "done": 0, "of": 0})


def step(part: str, done: int, of: int) -> None:
    """Inside the current stage, ``done`` of ``of`` units of ``part`` are finished."""
    _write({"part": part, "done": int(done), "of": int(of)})


def trainer_callback(part: str) -> Any:
    """A transformers ``TrainerCallback`` that reports ``part`` steps (global step of
    max_steps) after every optimizer step."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            step(part, state.global_step, state.max_steps)

    return Progress()

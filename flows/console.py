"""The CLI's terminal: one line per stage with a progress bar; library noise in a log file.

vLLM (and its engine-core process), TRL, transformers, Prefect and tqdm all write to the
process's stdout and stderr, and so do the spawned stage children, which inherit them. So
the redirect is at the file-descriptor level: while a command runs, fds 1 and 2 point at
``$PONDER_HOME/logs/<command>-<time>.log``, and only the CLI's own rich consoles keep the
terminal. Stages say where they are through ``models.progress``; a thread here polls that
and draws the bars. ``--verbose`` leaves everything on the terminal. Under a test runner
that swaps ``sys.stdout`` (typer's CliRunner) nothing is redirected. The CLI is one
command per process, so the redirect lasts until the process exits.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from models import progress

STATE: dict[str, Any] = {"verbose": False, "log": None}


def _real_fds() -> bool:
    """True when stdout/stderr are the process's own file descriptors 1 and 2."""
    try:
        return (
            sys.stdout is sys.__stdout__
            and sys.stderr is sys.__stderr__
            and sys.stdout.fileno() == 1
            and sys.stderr.fileno() == 2
        )
    except (AttributeError, OSError, ValueError):
        return False


def log_path(command: str) -> Path:
    from models.settings import get_settings

    settings = get_settings()
    settings.apply_environment()  # owner-only folders and umask before the first log line
    folder = settings.home / "logs"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder / f"{command}-{dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"


@contextmanager
def quiet(command: str, consoles: Sequence[Console]) -> Iterator[Path | None]:
    """Run the body with library output in a log file and stage bars on the terminal;
    yields the log's path (None when nothing is redirected)."""
    STATE["log"] = None
    if STATE["verbose"] or not _real_fds():
        yield None
        return
    log = log_path(command)
    sys.stdout.flush()
    sys.stderr.flush()
    terminals = [os.fdopen(os.dup(2 if c.stderr else 1), "w", buffering=1) for c in consoles]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for c, terminal in zip(consoles, terminals, strict=True):
        c.file = terminal
    os.environ[progress.ENV] = str(log.with_name(f".progress-{os.getpid()}.json"))
    display = StageDisplay(consoles[0], command)
    display.start()
    ok = False
    try:
        yield log
        ok = True
    finally:
        display.stop(ok)
        Path(os.environ.pop(progress.ENV)).unlink(missing_ok=True)
        STATE["log"] = log
        # fds 1 and 2 stay on the log until the process exits (Prefect's temporary server
        # and vLLM say goodbye at exit); only the consoles keep the terminal


class StageDisplay:
    """Polls ``models.progress`` and keeps one rich progress line per stage."""

    def __init__(self, console: Console, command: str, poll_s: float = 0.3) -> None:
        self.console, self.command, self.poll_s = console, command, poll_s
        self.bars = Progress(
            TextColumn("{task.fields[mark]} {task.description:<22}"),
            BarColumn(bar_width=28),
            TextColumn("{task.fields[detail]:<22}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            auto_refresh=console.is_terminal,
        )
        self.current: tuple[str, TaskID] | None = None
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ponder-progress", daemon=True)

    def start(self) -> None:
        if self.console.is_terminal:
            self.bars.start()
        self._thread.start()

    def stop(self, ok: bool) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._update(progress.read())
        self._finish(ok)
        if self.console.is_terminal:
            self.bars.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._update(progress.read())

    def _update(self, state: dict[str, Any]) -> None:
        name = str(state.get("stage") or self.command)
        total = int(state.get("total") or 1)
        label = f"{name} ({state.get('index', 1)}/{total})" if total > 1 else name
        if self.current is None or self.current[0] != label:
            self._finish(True)
            task = self.bars.add_task(label, total=None, mark="[cyan]>[/]", detail="")
            self.current = (label, task)
        of, done = int(state.get("of") or 0), int(state.get("done") or 0)
        detail = f"{state.get('part', '')} {done}/{of}" if of else ""
        self.bars.update(self.current[1], total=of or None, completed=done, detail=detail)

    def _finish(self, ok: bool) -> None:
        if self.current is None:
            return
        label, task = self.current
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        info = self.bars.tasks[task]
        self.bars.update(task, total=info.total or 1, completed=info.total or 1, mark=mark)
        if not self.console.is_terminal:  # no live display: one plain line per stage
            elapsed = info.finished_time or info.elapsed or 0.0
            self.console.print(
                f"{'✓' if ok else '✗'} {label:<22} {info.fields['detail']:<22} {elapsed:6.1f} s"
            )
        self.current = None

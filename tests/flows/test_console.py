"""The CLI's terminal: a real ``ponder`` process prints one line per stage and a summary,
library output lands in the log file it names, and ``--verbose`` brings it back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from models import progress

NOISE = ("Finished in state", "| INFO", "Beginning flow run", "Creating initial MLflow")


def _ponder(home: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("ponder")
    env = os.environ | {"PONDER_HOME": str(home), "COLUMNS": "120"}
    env.pop("PREFECT_API_URL", None)  # its own temporary Prefect server, like a user's
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def test_clean_terminal_and_the_library_log(tmp_path: Path) -> None:
    args = ("collect", "--domain", "medicine", "--per-cell", "1", "--sources", "generator")
    done = _ponder(tmp_path / "home", *args)
    terminal = done.stdout + done.stderr
    assert done.returncode == 0, terminal
    assert re.search(r"^✓ collect .* s$", done.stdout, re.M), terminal
    assert "cases" in done.stdout and "v00001" in done.stdout  # the summary table
    assert not [n for n in NOISE if n in terminal], terminal
    named = re.search(r"library log: (\S+\.log)", done.stderr)
    assert named, terminal
    log = Path(named.group(1))
    assert log.parent == tmp_path / "home" / "logs"
    text = log.read_text()
    assert "Finished in state Completed" in text and "Beginning flow run" in text
    assert not list(log.parent.glob(".progress-*"))  # the progress file is cleaned up
    verbose = _ponder(tmp_path / "loud", "--verbose", *args)
    assert verbose.returncode == 0, verbose.stderr
    assert "Finished in state Completed" in verbose.stdout + verbose.stderr
    assert "library log:" not in verbose.stderr


def test_progress_reports_only_when_asked(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.stage("collect")  # no file named: a no-op
    assert progress.read() == {}
    monkeypatch.setenv(progress.ENV, str(tmp_path / "p.json"))
    progress.stage("finetune", 4, 6)
    progress.step("SFT steps", 3, 40)
    state = progress.read()
    assert (state["stage"], state["index"], state["total"]) == ("finetune", 4, 6)
    assert (state["part"], state["done"], state["of"]) == ("SFT steps", 3, 40)
    progress.stage("evaluate", 5, 6)  # a new stage starts its steps from zero
    assert progress.read()["done"] == 0 and progress.read()["of"] == 0

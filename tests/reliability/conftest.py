"""The fault suite's table: every fault test records runs, survivals and rows lost, and the
session ends with one row per fault (``make reliability`` prints it; ``make test`` too)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

RESULTS: list[dict] = []


@pytest.fixture
def record() -> Callable[..., None]:
    """``record(fault, runs, survived, rows_lost)`` after a fault test's checks ran."""

    def add(fault: str, runs: int, survived: int, rows_lost: int) -> None:
        RESULTS.append({"fault": fault, "runs": runs, "survived": survived, "rows_lost": rows_lost})

    return add


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if not RESULTS:
        return
    width = max(len(r["fault"]) for r in RESULTS)
    tr = terminalreporter
    tr.section("reliability: one row per injected fault")
    tr.write_line(f"{'fault':<{width}}  runs  survived  rows lost")
    for r in RESULTS:
        line = f"{r['fault']:<{width}}  {r['runs']:>4}  {r['survived']:>8}  {r['rows_lost']:>9}"
        tr.write_line(line)
    out = Path(config.rootpath, ".ponder", "reliability.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(RESULTS, indent=2))
    tr.write_line(f"(also written to {out})")

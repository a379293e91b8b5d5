"""The scale bench's check of a measured run against the Prefect server's log: a run that
waited out SQLite's busy timeout is flagged, so its ratio is not read as clean."""

from __future__ import annotations

import time
from pathlib import Path

from bench.scale import server_waits

LOG = """\
21:41:30.100 | INFO    | prefect.server - a line that is not a wait
21:41:32.540 | ERROR   | prefect.server.services.task_run_recorder - Error flushing 1 events
21:41:32.548 | ERROR   | docket.dependencies - \u21a9 [ 60151ms] mark_deployments_ready(...)
21:41:33.000 | ERROR   | docket.dependencies - \u21a9 [   412ms] mark_work_queues_ready(...)
21:50:00.000 | ERROR   | docket.dependencies - \u21a9 [ 60002ms] mark_deployments_ready(...)
"""


def _at(clock: str) -> float:
    h, m, s = (int(x) for x in clock.split(":"))
    return time.mktime((2026, 12, 5, h, m, s, 0, 0, -1))


def test_waits_inside_the_window_are_found_and_short_ones_are_not(tmp_path: Path) -> None:
    log = tmp_path / "prefect-server.log"
    log.write_text(LOG)
    got = server_waits(log, (_at("21:40:00"), _at("21:45:00")))
    assert got == ["21:41:32 a task-run flush failed", "21:41:32 a call waited 60 s"]
    assert server_waits(log, (_at("21:49:00"), _at("21:51:00"))) == ["21:50:00 a call waited 60 s"]
    assert server_waits(log, (_at("21:42:00"), _at("21:49:00"))) == []
    assert server_waits(tmp_path / "missing.log", (_at("21:40:00"), _at("21:45:00"))) == []

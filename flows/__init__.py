"""Prefect flows and the ``ponder`` command line.

Prefect reads its settings when it is first imported, so defaults are exported here,
before any flow module imports Prefect: PREFECT_HOME is <PONDER_HOME>/prefect (unless the
user set it), the ephemeral local API server gets 90 s to start on a busy 2-core box, and
server telemetry is off (these machines reach no outside network).
"""

import os
from pathlib import Path

from models.settings import get_settings

os.environ.setdefault("PREFECT_HOME", str(get_settings().prefect_home))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no outside network
Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)

"""prefect.yaml parses into Prefect's own schedule and trigger models."""

from __future__ import annotations

from pathlib import Path

import yaml

from flows.collect import FEEDBACK_READY

SPEC = Path(__file__).parents[1] / "deployments" / "prefect.yaml"


def test_refresh_reward_is_triggered_by_collect_event() -> None:
    from prefect.events import DeploymentEventTrigger

    deployments = {d["name"]: d for d in yaml.safe_load(SPEC.read_text())["deployments"]}
    refresh = deployments["refresh-reward"]
    module, _, func = refresh["entrypoint"].partition(":")
    assert Path(SPEC.parents[1], module).is_file() and func == "refresh_reward"
    (trigger,) = refresh["triggers"]
    parsed = DeploymentEventTrigger(**{k: v for k, v in trigger.items() if k != "type"})
    assert FEEDBACK_READY in parsed.expect
    from prefect.events.schemas.events import Resource

    emitted = Resource({"prefect.resource.id": "ponder.feedback.medicine"})  # what collect sends
    assert parsed.match.includes([emitted])
    assert refresh["schedules"][0]["cron"]

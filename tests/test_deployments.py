"""prefect.yaml parses into Prefect's own schedule and trigger models, and its triggers
match the events the flows emit (tasks/events.py), so the stages really chain."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks import events

SPEC = Path(__file__).parents[1] / "deployments" / "prefect.yaml"
DEPLOYMENTS = {d["name"]: d for d in yaml.safe_load(SPEC.read_text())["deployments"]}
CHAIN = {  # deployment -> the event that starts it
    "refresh-reward": events.FEEDBACK_READY,
    "finetune": events.REWARD_PROMOTED,
    "evaluate-promote": events.POLICY_CHALLENGER,
}


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoints_exist_and_schedules_parse(name: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    spec = DEPLOYMENTS[name]
    module, _, func = spec["entrypoint"].partition(":")
    assert f"def {func}(" in Path(SPEC.parents[1], module).read_text()
    assert spec["work_pool"]["name"] in {"ponder-cpu", "ponder-gpu"}
    for schedule in spec.get("schedules", []):
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])


@pytest.mark.parametrize(("name", "event"), sorted(CHAIN.items()))
def test_each_stage_is_triggered_by_the_previous_one(name: str, event: str) -> None:
    from prefect.events import DeploymentEventTrigger
    from prefect.events.schemas.events import Resource

    (trigger,) = DEPLOYMENTS[name]["triggers"]
    parsed = DeploymentEventTrigger(**{k: v for k, v in trigger.items() if k != "type"})
    assert event in parsed.expect
    emitted = Resource({"prefect.resource.id": events.resource_id(event, "medicine")})
    assert parsed.match.includes([emitted])
    assert "event.payload.domain" in str(trigger["parameters"])


def test_the_loop_runs_on_a_schedule() -> None:
    for name in ("collect", "refresh-reward", "infer"):
        assert DEPLOYMENTS[name]["schedules"][0]["cron"]

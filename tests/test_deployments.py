"""prefect.yaml parses into Prefect's own schedule and trigger models, every deployment's
parameters validate against its flow's params model, and its triggers match the events the
flows emit (tasks/events.py) for their own domain only, so the stages really chain."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from flows.options import flow_schema
from tasks import events

SPEC = Path(__file__).parents[1] / "deployments" / "prefect.yaml"
DEPLOYMENTS = {d["name"]: d for d in yaml.safe_load(SPEC.read_text())["deployments"]}
DOMAINS = ("medicine", "finance_risk")
CHAIN = {  # deployment (without domain) -> the event that starts it
    "refresh-reward": events.FEEDBACK_READY,
    "finetune": events.REWARD_PROMOTED,
    "evaluate-promote": events.POLICY_CHALLENGER,
}


def _flow(spec: dict):
    path, _, name = spec["entrypoint"].partition(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoints_parameters_and_schedules_are_valid(name: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    spec = DEPLOYMENTS[name]
    flow = _flow(spec)
    params = flow_schema(flow)(**spec["parameters"]["params"])  # raises on a bad knob
    assert name.endswith(params.domain.replace("_", "-")) or name == "pipeline"
    assert spec["work_pool"]["name"] in {"ponder-cpu", "ponder-gpu"}
    for schedule in spec.get("schedules", []):
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize(("stage", "event"), sorted(CHAIN.items()))
def test_each_stage_is_triggered_by_the_previous_one(stage: str, event: str, domain: str) -> None:
    from prefect.events import DeploymentEventTrigger
    from prefect.events.schemas.events import Resource

    (trigger,) = DEPLOYMENTS[f"{stage}-{domain.replace('_', '-')}"]["triggers"]
    parsed = DeploymentEventTrigger(**{k: v for k, v in trigger.items() if k != "type"})
    assert event in parsed.expect
    ours = Resource({"prefect.resource.id": events.resource_id(event, domain)})
    other = next(d for d in DOMAINS if d != domain)
    theirs = Resource({"prefect.resource.id": events.resource_id(event, other)})
    assert parsed.match.includes([ours]) and not parsed.match.includes([theirs])
    # a trigger never replaces the deployment's params (Prefect merges top-level keys)
    assert "params" not in (trigger.get("parameters") or {})


def test_evaluate_gets_the_announced_challenger() -> None:
    for domain in DOMAINS:
        (trigger,) = DEPLOYMENTS[f"evaluate-promote-{domain.replace('_', '-')}"]["triggers"]
        assert trigger["parameters"] == {"challenger": "{{ event.payload.uri }}"}
        assert "challenger" in _flow(DEPLOYMENTS["evaluate-promote-medicine"]).parameters.properties


def test_the_loop_runs_on_a_schedule() -> None:
    for domain in DOMAINS:
        for stage in ("collect", "refresh-reward", "infer"):
            assert DEPLOYMENTS[f"{stage}-{domain.replace('_', '-')}"]["schedules"][0]["cron"]


DEMO = Path(__file__).parents[1] / "deployments" / "demo.yaml"


def test_demo_config_validates_as_pipeline_params() -> None:
    """`make demo` passes demo.yaml to `ponder pipeline --config`: every section must be a
    known stage with known knobs (the params models forbid unknown keys)."""
    from flows.pipeline import STAGES, PipelineParams

    values = yaml.safe_load(DEMO.read_text())
    params = PipelineParams(**values)
    assert set(values) - {"domain", "isolate"} <= set(STAGES)
    for stage in STAGES:
        section = values.get(stage, "absent")
        if section is None:
            assert getattr(params, stage) is None
        elif isinstance(section, dict):
            assert getattr(params, stage).domain == params.domain


def test_demo_config_keeps_the_production_gates() -> None:
    """The demo promotes through the real gates: no floor, margin or tolerance of the
    policy or reward-model gate differs from the params models' defaults."""
    from flows.pipeline import PipelineParams
    from flows.refresh_reward import RefreshParams
    from tasks.evaluate import GateConfig

    params = PipelineParams(**yaml.safe_load(DEMO.read_text()))
    assert params.evaluate.gate == GateConfig()
    production = RefreshParams()
    for knob in ("floor", "promote_margin", "family_tolerance"):
        assert getattr(params.refresh, knob) == getattr(production, knob), knob


def test_demo_config_with_an_unknown_knob_is_refused() -> None:
    from pydantic import ValidationError

    from flows.pipeline import PipelineParams

    values = yaml.safe_load(DEMO.read_text())
    values["collect"]["per_cel"] = 4
    with pytest.raises(ValidationError, match="per_cel"):
        PipelineParams(**values)

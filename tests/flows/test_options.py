"""A knob is declared once: a field added to a params model is a CLI option, a Prefect form
field and a YAML key with nothing else edited; a typo at any level of demo.yaml or
prefect.yaml is refused with the key and the valid keys named."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from prefect import flow
from pydantic import Field
from typer import Typer
from typer.testing import CliRunner

from domains.errors import PonderError
from flows.cli import app
from flows.finetune import FinetuneParams
from flows.infer import InferParams
from flows.options import command, validated
from flows.pipeline import PipelineParams
from flows.serve import check_deployments
from models.policy import PolicyTrainConfig

ROOT = Path(__file__).parents[2] / "deployments"


class WiderTrain(PolicyTrainConfig):
    warmup_ratio: float = Field(default=0.0, ge=0, le=1, description="LR warm-up share.")


class WiderParams(FinetuneParams):
    new_knob: int = Field(default=3, ge=0, le=9, description="A knob added by this test.")
    train: WiderTrain = Field(default_factory=WiderTrain, description="TRL knobs.")


def test_a_new_field_is_an_option_a_form_field_and_a_yaml_key() -> None:
    got: list[WiderParams] = []
    stage = Typer()
    command(stage, "stage", WiderParams, got.append, help="A stage with one more knob.")
    command(stage, "other", InferParams, got.append, help="A second command (typer groups).")
    wide = {"COLUMNS": "300", "TERMINAL_WIDTH": "300"}
    help_text = CliRunner().invoke(stage, ["stage", "--help"], env=wide).output
    assert "--new-knob" in help_text and "--train.warmup-ratio" in help_text
    assert "A knob added by this test." in help_text and "[default: (3)]" in help_text
    done = CliRunner().invoke(stage, ["stage", "--new-knob", "5", "--train.warmup-ratio", "0.1"])
    assert done.exit_code == 0, done.output
    assert got[0].new_knob == 5 and got[0].train.warmup_ratio == 0.1
    assert got[0].train.grpo_max_steps == PolicyTrainConfig().grpo_max_steps  # the model's

    @flow
    def wider(params: WiderParams | None = None) -> None:
        """A flow taking the wider params (the Prefect UI form is its parameter schema)."""

    schema = wider.parameters.model_dump_json()
    assert "new_knob" in schema and "warmup_ratio" in schema
    values = yaml.safe_load("new_knob: 7\ntrain: {warmup_ratio: 0.2}\n")
    assert validated(WiderParams, values, where="x.yaml").train.warmup_ratio == 0.2
    with pytest.raises(PonderError, match="new_knob") as err:
        validated(WiderParams, {"new_knbo": 7}, where="x.yaml")
    assert err.value.field == "new_knbo"


def test_config_options_and_set_apply_in_that_order(tmp_path: Path) -> None:
    got: list[WiderParams] = []
    stage = Typer()
    command(stage, "stage", WiderParams, got.append, help="h")
    command(stage, "other", InferParams, got.append, help="A second command (typer groups).")
    config = tmp_path / "c.yaml"
    config.write_text("new_knob: 1\ntrain: {grpo_max_steps: 7, seed: 4}\nfamily: bmi\n")
    args = ["stage", "--config", str(config), "--new-knob", "2", "--train.seed", "5"]
    done = CliRunner().invoke(stage, [*args, "--set", "family=null", "--set", "orm=null"])
    assert done.exit_code == 0, done.output
    params = got[0]
    assert (params.new_knob, params.train.grpo_max_steps, params.train.seed) == (2, 7, 5)
    assert params.family is None and params.orm is None


def _levels(values: dict, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every mapping of a config, by its key path."""
    found = [path]
    for key, value in values.items():
        if isinstance(value, dict):
            found += _levels(value, (*path, key))
    return found


def _at(values: dict, path: tuple[str, ...]) -> dict:
    for key in path:
        values = values[key]
    return values


FREE = {("collect", "where")}  # a mapping whose keys are data (case fields), not knobs


@pytest.mark.parametrize(
    "level", [p for p in _levels(yaml.safe_load((ROOT / "demo.yaml").read_text())) if p not in FREE]
)
def test_a_typo_at_each_level_of_demo_yaml_is_refused(level, tmp_path: Path) -> None:  # fmt: skip
    values = yaml.safe_load((ROOT / "demo.yaml").read_text())
    _at(values, level)["max_stepz"] = 1
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(values))
    wide = {"COLUMNS": "300", "TERMINAL_WIDTH": "300"}
    done = CliRunner().invoke(app, ["pipeline", "--config", str(config)], env=wide)
    assert done.exit_code == 2, done.output
    key = ".".join((*level, "max_stepz"))
    assert key in done.output and "unknown key" in done.output
    first_valid = sorted(_valid_keys(level))[0]
    assert f"use one of ['{first_valid}'" in " ".join(done.output.split())


def _valid_keys(level: tuple[str, ...]) -> set[str]:
    schema = PipelineParams
    for key in level:
        schema = schema.model_fields[key].annotation
        schema = next(
            a for a in (schema, *getattr(schema, "__args__", ())) if hasattr(a, "model_fields")
        )
    return set(schema.model_fields)  # fmt: skip


def _prefect_levels(spec: dict) -> list[tuple[str, ...]]:
    """Where a key can go wrong in prefect.yaml: the file, each deployment, its parameters,
    its params and the configs nested in them, and each trigger's parameters."""
    levels: list[tuple] = [()]
    for n, dep in enumerate(spec["deployments"]):
        levels += [("deployments", n), ("deployments", n, "parameters")]
        params = dep["parameters"]["params"]
        levels += [("deployments", n, "parameters", "params", *p) for p in _levels(params)]
        for t, trigger in enumerate(dep.get("triggers") or []):
            if "parameters" in trigger:
                levels.append(("deployments", n, "triggers", t, "parameters"))
    return levels


PREFECT = yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_the_project_deployments_validate() -> None:
    assert check_deployments() == len(PREFECT["deployments"])


@pytest.mark.parametrize("level", _prefect_levels(PREFECT), ids=str)
def test_a_typo_at_each_level_of_prefect_yaml_is_refused(level, tmp_path: Path) -> None:
    spec = copy.deepcopy(PREFECT)
    _at(spec, level)["max_stepz"] = 1
    path = tmp_path / "deployments" / "prefect.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(PonderError) as err:
        check_deployments(path)
    assert err.value.field.endswith("max_stepz") and "unknown key" in err.value.problem
    assert err.value.fix.startswith("use one of [")
    if level:
        assert err.value.field.startswith(spec["deployments"][level[1]]["name"])


def test_ponder_deploy_refuses_a_file_with_an_unknown_key(tmp_path: Path, monkeypatch) -> None:
    """`ponder deploy` validates the file before calling Prefect (here with no server)."""
    import flows.serve

    bad = tmp_path / "prefect.yaml"
    shutil.copy(ROOT / "prefect.yaml", bad)
    spec = yaml.safe_load(bad.read_text())
    spec["deployments"][0]["parameters"]["params"]["per_cel"] = 1
    bad.write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(flows.serve, "PREFECT_FILE", bad)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached
    done = CliRunner().invoke(app, ["deploy"])
    assert done.exit_code == 2 and "per_cel" in done.output and "per_cell" in done.output


@pytest.mark.parametrize(("field", "value"), [("strategy", "bem"), ("domain", "medcine")])
def test_registry_names_are_checked_when_params_are_built(field: str, value: str) -> None:
    with pytest.raises(PonderError, match="use one of") as err:
        validated(InferParams, {field: value}, where="infer")
    assert err.value.field == field and value in err.value.problem

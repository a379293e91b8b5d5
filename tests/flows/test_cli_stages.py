"""Each stage's command succeeds once end to end through the CLI on the tiny model: exit
code 0, and the lake and registry versions it should leave behind.

``ponder collect`` and ``ponder evaluate`` are also run through the CLI in test_collect and
test_evaluate_promote, and ``ponder pipeline`` in test_pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from models.registry import connect, model_name
from models.settings import get_settings
from tasks.lake import Lake
from tests.aliases import clear_aliases

pytestmark = pytest.mark.usefixtures("prefect_harness")
DOMAIN = "medicine"


def _run(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.output


def _challenger(kind: str) -> str:
    version = connect().get_model_version_by_alias(model_name(DOMAIN, kind), "challenger")
    return str(version.version)


def test_collect_infer_refresh_finetune_through_the_cli(fresh_lake, tiny_model, monkeypatch):
    monkeypatch.setenv("PONDER_BACKEND", "transformers")
    get_settings.cache_clear()
    for kind in ("policy", "orm", "prm"):
        clear_aliases(model_name(DOMAIN, kind))
    lake, model = Lake(fresh_lake / "lake"), str(tiny_model)
    _run("collect", "--domain", DOMAIN, "--per-cell", "2", "--sources", "generator")
    assert lake.versions(DOMAIN, "cases") == ["v00001"]
    search = ["--strategy", "cot", "--width", "1", "--max-tokens", "16"]
    _run("infer", "--domain", DOMAIN, "--model", model, "--set", "split=null", *search)
    assert lake.versions(DOMAIN, "predictions") == ["v00001"]
    preds = lake.scan(DOMAIN, "predictions").collect()
    assert preds.height == lake.scan(DOMAIN, "cases").collect().height
    train = ["--train.max-steps", "1", "--train.batch-size", "2", "--train.max-length", "2048"]
    rm = ["--models", "orm", "--backbone", model, "--policy", model, "--mc-rollouts", "0"]
    _run("refresh-reward", "--domain", DOMAIN, *rm, *train)
    assert lake.versions(DOMAIN, "pairs") == ["v00001"]
    orm = _challenger("orm")
    tags = connect().get_model_version(model_name(DOMAIN, "orm"), orm).tags
    assert tags["ponder.gate.decision"] in {"promoted", "kept_challenger"}
    steps = ["--train.sft-max-steps", "1", "--train.grpo-max-steps", "1"]
    steps += ["--train.num-generations", "2", "--train.batch-size", "2"]
    tuned = [
        "--base-model",
        model,
        "--set",
        "orm=null",
        "--train.max-completion-length",
        "8",
        "--no-curriculum",
    ]
    _run("finetune", "--domain", DOMAIN, *tuned, *steps)
    policy = _challenger("policy")
    tags = connect().get_model_version(model_name(DOMAIN, "policy"), policy).tags
    assert tags["ponder.dataset"].startswith(f"{DOMAIN}/cases@v00001:")
    assert tags["ponder.base"] == f"path:{Path(model).resolve()}"

"""CLI: help, doctor, generate, and every bad input exits non-zero with field + fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args))


def test_console_script_help() -> None:
    exe = Path(sys.executable).with_name("ponder")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for command in ("doctor", "models", "generate"):
        assert command in out.stdout


def test_doctor_reports_settings_backend_and_missing() -> None:
    result = _run("doctor")
    assert result.exit_code == 0, result.output
    assert "tracking_uri" in result.output and "sqlite:///" in result.output
    assert "generation backend" in result.output and "vLLM CPU" in result.output
    assert "ponder models fetch-example" in result.output  # example not built in tests


def test_generate_transformers_writes_jsonl(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = _run(
        "generate",
        "--model",
        str(tiny_model),
        "--prompt",
        "2+2?",
        "--prompt",
        "3+3?",
        "--sampling.n",
        "2",
        "--sampling.temperature",
        "0.8",
        "--sampling.max-tokens",
        "8",
        "--sampling.seed",
        "1",
        "--backend",
        "transformers",
        "--output",
        str(out),
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["token_ids"]) <= 8 for r in rows)


def test_generate_leaves_an_engine_it_did_not_start(tiny_model: Path, vllm_engine) -> None:
    """`ponder generate` closes only its own engine, not one this process already ran."""
    from models.engine import is_running
    from models.loading import ModelSpec

    session = ModelSpec(model=str(tiny_model), dtype="float32")
    assert is_running(session, "vllm")
    result = _run("generate", "--model", str(tiny_model), "--prompt", "hi",
                  "--sampling.max-tokens", "4",
                  "--backend", "transformers")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert is_running(session, "vllm"), "the session's engine was shut down"
    assert not is_running(ModelSpec(model=str(tiny_model)), "transformers"), "its own is closed"


def _pickled(tiny_model: Path, tmp_path: Path) -> str:
    bad = tmp_path / "pickled"
    shutil.copytree(tiny_model, bad)
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    return str(bad)


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("missing-path", "model"),
        ("missing-registered", "model"),
        ("missing-alias", "model"),
        ("pickle", "model"),
        ("remote-code", "trust_remote_code"),
        ("temperature", "sampling.temperature"),
        ("n", "sampling.n"),
        ("max-tokens", "sampling.max_tokens"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(case, field, tiny_model, tmp_path) -> None:
    model = str(tiny_model)
    extra: list[str] = []
    if case == "missing-path":
        model = str(tmp_path / "no-such-model")
    elif case == "missing-registered":
        model = "models:/ponder-nothing-policy@champion"
    elif case == "missing-alias":
        from models.registry import register_hf_dir

        register_hf_dir(tiny_model, "ponder-cli-policy", alias="challenger")
        model = "models:/ponder-cli-policy@champion"
    elif case == "pickle":
        model = _pickled(tiny_model, tmp_path)
    elif case == "remote-code":
        extra = ["--trust-remote-code"]
    else:
        extra = {
            "temperature": ["--sampling.temperature", "-1"],
            "n": ["--sampling.n", "0"],
            "max-tokens": ["--sampling.max-tokens", "0"],
        }[case]
    out = tmp_path / "out.jsonl"
    result = _run(
        "generate",
        "--model",
        model,
        "--prompt",
        "hi",
        "--output",
        str(out),
        "--backend",
        "transformers",
        *extra,
    )
    assert result.exit_code == 2, result.output
    assert f"error {field}:" in " ".join(result.output.split())
    assert "fix:" in result.output
    assert not out.exists() and not out.with_suffix(".jsonl.tmp").exists()


def test_fetch_example_unreachable_registry(monkeypatch, tmp_path: Path) -> None:
    from models.settings import get_settings

    monkeypatch.setenv("PONDER_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("PONDER_HOME", str(tmp_path / "h"))
    get_settings.cache_clear()
    try:
        result = _run("models", "fetch-example")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "unreachable" in result.output
    assert not (tmp_path / "h" / "models" / "smollm2-135m-instruct").exists()


def test_models_promote_list_describe_rollback() -> None:
    from models.registry import connect

    name = "ponder-clitest-policy"
    client = connect()
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source="file:///dev/null")
    result = _run("models", "rollback", name)
    assert result.exit_code == 2 and "no @previous to roll back" in result.output
    assert _run("models", "promote", name, "1", "--reason", "baseline").exit_code == 0
    result = _run("models", "promote", name, "2", "--reason", "better on eval")
    assert result.exit_code == 0 and "1 -> 2" in result.output, result.output
    listing = _run("models", "list", "--prefix", "ponder-clitest")
    assert listing.exit_code == 0, listing.output
    assert "@champion" in listing.output and "@previous" in listing.output
    described = _run("models", "describe", f"{name}@champion")
    assert "manual: better on eval" in described.output
    result = _run("models", "rollback", name, "--reason", "regression")
    assert result.exit_code == 0 and "2 -> 1" in result.output
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    missing = _run("models", "promote", name, "9", "--reason", "typo")
    assert missing.exit_code == 2 and "no version 9" in missing.output


def test_flow_commands_validate_before_running() -> None:
    """Each flow command turns a bad option into `error <field>` + fix, exit 2."""
    cases = [
        (["infer", "--model", "models:/x@champion", "--width", "0"], "width"),
        (["finetune", "--train.num-generations", "3", "--train.batch-size", "8"], "train"),
        (["evaluate", "--gate.margin", "5"], "gate.margin"),
        (["refresh-reward", "--train.batch-size", "0"], "train.batch_size"),
    ]
    for args, field in cases:
        result = _run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert f"error {field}:" in result.output and "--help" in result.output

"""Registry helpers against a real (SQLite-backed) MLflow registry."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from domains.errors import PonderError
from models.registry import (
    ModelRef,
    check_reachable,
    download_model,
    model_name,
    parse_models_uri,
    register_hf_dir,
)


def test_names() -> None:
    assert model_name("medicine", "prm") == "ponder-medicine-prm"
    with pytest.raises(PonderError, match="unknown model kind"):
        model_name("medicine", "critic")


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("models:/a@champion", ModelRef("a", alias="champion")),
        ("models:/ponder-x-policy/3", ModelRef("ponder-x-policy", version="3")),
    ],
)
def test_parse(uri: str, ref: ModelRef) -> None:
    assert parse_models_uri(uri) == ref
    assert ref.uri == uri


@pytest.mark.parametrize("uri", ["models:/", "models:/a", "models:/a/latest", "models:/@x"])
def test_parse_malformed(uri: str) -> None:
    with pytest.raises(PonderError, match="malformed"):
        parse_models_uri(uri)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_fails_fast() -> None:
    with pytest.raises(PonderError) as err:
        check_reachable(f"http://127.0.0.1:{_free_port()}", timeout_s=2)
    assert err.value.field == "tracking_uri"


def test_register_alias_and_download(tiny_model: Path) -> None:
    version = register_hf_dir(
        tiny_model, "ponder-test-policy", alias="challenger", tags={"ponder.test": "1"}
    )
    local = download_model("models:/ponder-test-policy@challenger")
    assert (local / "config.json").is_file() and any(local.glob("*.safetensors"))
    assert download_model(f"models:/ponder-test-policy/{version.version}") == local
    with pytest.raises(PonderError, match="no alias @champion") as err:
        download_model("models:/ponder-test-policy@champion")
    assert "challenger" in err.value.fix
    with pytest.raises(PonderError, match="no registered model"):
        download_model("models:/ponder-missing-policy@champion")


def test_failed_registration_leaves_no_version(tiny_model: Path, monkeypatch) -> None:
    import mlflow

    def boom(*args, **kwargs):
        raise RuntimeError("alias service down")

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", boom)
    with pytest.raises(RuntimeError):
        register_hf_dir(tiny_model, "ponder-half-policy", alias="champion")
    client = mlflow.MlflowClient()
    assert client.search_model_versions("name='ponder-half-policy'") == []
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="attributes.status = 'FAILED'"
    )
    assert len(runs) >= 1

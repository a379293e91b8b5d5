"""Settings: defaults under home, env overrides, Prefect state location."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.settings import Settings


def test_defaults_sit_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PONDER_TRACKING_URI", "PONDER_LAKE_ROOT", "PONDER_MODELS_DIR", "PREFECT_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PONDER_HOME", str(tmp_path / "h"))
    s = Settings()
    home = (tmp_path / "h").resolve()
    assert s.home == home
    assert s.tracking_uri == f"sqlite:///{home}/mlflow.db"
    assert s.artifact_root == home / "mlartifacts"
    assert s.lake_root == home / "lake"
    assert s.models_dir == home / "models"
    assert s.prefect_home == home / "prefect"


def test_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("PONDER_LAKE_ROOT", str(tmp_path / "lake2"))
    monkeypatch.setenv("PONDER_BACKEND", "transformers")
    monkeypatch.setenv("PONDER_TRUST_REMOTE_CODE_MODELS", '["org/model"]')
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "pf"))
    s = Settings()
    assert s.tracking_uri == "http://127.0.0.1:5000"
    assert s.lake_root == (tmp_path / "lake2").resolve()
    assert s.backend == "transformers"
    assert s.trust_remote_code_models == ["org/model"]
    assert s.prefect_home == tmp_path / "pf"


def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="backend"):
        Settings()


def test_apply_environment_sets_prefect_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    s = Settings(home=tmp_path / "h2")
    s.apply_environment()
    import os

    assert os.environ["PREFECT_HOME"] == str((tmp_path / "h2").resolve() / "prefect")
    assert s.lake_root.is_dir() and s.models_dir.is_dir()


def test_every_field_is_described() -> None:
    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert missing == []

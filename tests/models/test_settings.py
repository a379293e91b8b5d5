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


def test_home_lake_and_logs_are_owner_only_and_doctor_warns_when_not(tmp_path: Path) -> None:
    """Folders 0700 and files 0600 from the first write on; looser folders are reported
    with the chmod that fixes them."""
    import os
    import stat

    from flows.doctor import find_problems, library_versions

    old = os.umask(0o022)
    try:
        s = Settings(home=tmp_path / "home")
        s.apply_environment()
        logs = s.home / "logs"
        logs.mkdir()
        (s.lake_root / "note.txt").write_text("Patient: Ann Lee")
        modes = [stat.S_IMODE(p.stat().st_mode) for p in (s.home, s.lake_root, logs)]
        assert modes == [0o700] * 3
        assert stat.S_IMODE((s.lake_root / "note.txt").stat().st_mode) == 0o600
        assert not [p for p in find_problems(s, library_versions()) if "open to other" in p.what]
        s.lake_root.chmod(0o755)
        found = [p for p in find_problems(s, library_versions()) if "open to other" in p.what]
        assert [p.fix for p in found] == [f"chmod -R go-rwx {s.lake_root}"]
        assert "0755" in found[0].what
    finally:
        os.umask(old)

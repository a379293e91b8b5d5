"""Safe loading: missing paths, pickle weights, remote code without opt-in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from domains.errors import PonderError
from models.loading import ModelSpec, resolve_model_dir
from models.settings import get_settings


def _copy(tiny_model: Path, dest: Path) -> Path:
    shutil.copytree(tiny_model, dest)
    return dest


def test_unknown_path(tmp_path: Path) -> None:
    with pytest.raises(PonderError) as err:
        resolve_model_dir(ModelSpec(model=str(tmp_path / "nope")))
    assert err.value.field == "model" and "fetch-example" in err.value.fix


def test_pickle_weights_refused(tiny_model: Path, tmp_path: Path) -> None:
    bad = _copy(tiny_model, tmp_path / "pickled")
    (bad / "model.safetensors").unlink()
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(PonderError, match="pickle weights"):
        resolve_model_dir(ModelSpec(model=str(bad)))


def test_no_weights_refused(tiny_model: Path, tmp_path: Path) -> None:
    bad = _copy(tiny_model, tmp_path / "empty")
    (bad / "model.safetensors").unlink()
    with pytest.raises(PonderError, match="no \\*.safetensors"):
        resolve_model_dir(ModelSpec(model=str(bad)))


def test_remote_code_needs_allow_list(tiny_model: Path, monkeypatch) -> None:
    spec = ModelSpec(model=str(tiny_model), trust_remote_code=True)
    with pytest.raises(PonderError) as err:
        resolve_model_dir(spec)
    assert err.value.field == "trust_remote_code"
    assert "PONDER_TRUST_REMOTE_CODE_MODELS" in err.value.fix
    monkeypatch.setenv("PONDER_TRUST_REMOTE_CODE_MODELS", json.dumps([str(tiny_model)]))
    get_settings.cache_clear()
    try:
        assert resolve_model_dir(spec) == tiny_model.resolve()
    finally:
        monkeypatch.delenv("PONDER_TRUST_REMOTE_CODE_MODELS")
        get_settings.cache_clear()


def test_model_with_custom_code_needs_opt_in(tiny_model: Path, tmp_path: Path) -> None:
    custom = _copy(tiny_model, tmp_path / "custom")
    config = json.loads((custom / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(PonderError, match="custom model code"):
        resolve_model_dir(ModelSpec(model=str(custom)))


def test_good_directory_resolves(tiny_model: Path) -> None:
    assert resolve_model_dir(ModelSpec(model=str(tiny_model))) == tiny_model.resolve()


def test_reward_models_load_through_the_safe_loader(
    tiny_reward_model, tiny_prm, tmp_path, record
) -> None:
    """An ORM or PRM directory with a pickle checkpoint is refused like a policy's; a clean
    one loads (issue 20 item 7: both used to call from_pretrained directly)."""
    import shutil

    from domains.errors import PonderError
    from models.prm import ProcessRM
    from models.reward import OutcomeRM

    refused = 0
    for cls, src in ((OutcomeRM, tiny_reward_model), (ProcessRM, tiny_prm)):
        assert cls(src).model is not None
        bad = tmp_path / f"{cls.__name__}-pickled"
        shutil.copytree(src, bad)
        (bad / "pytorch_model.bin").write_bytes(b"\x80\x04 not a model")  # a pickle's magic
        with pytest.raises(PonderError, match="pickle weights"):
            cls(bad)
        refused += 1
    record("unsafe checkpoints (pickle beside an ORM/PRM)", 2, refused, 2 - refused)

"""Safe model loading: what a model reference may point at, checked before any load.

A model reference is a local Hugging Face directory or a ``models:/name@alias`` /
``models:/name/version`` URI from the MLflow registry. Before anything is loaded we check
that weights are safetensors (pickle-based ``.bin``/``.pt`` checkpoints can run code when
unpickled) and that custom model code runs only for models the operator allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from domains.errors import PonderError
from models.settings import get_settings

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class ModelSpec(BaseModel):
    """A model to load, with the options that change how it loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Local model directory or models:/NAME@ALIAS|/VERSION URI.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weight dtype; auto lets the backend pick."
    )
    max_model_len: int = Field(
        default=2048, ge=64, le=131072, description="Longest prompt + completion, in tokens."
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run model code shipped with the checkpoint. Needs the model listed in "
        "PONDER_TRUST_REMOTE_CODE_MODELS as well.",
    )


def resolve_model_dir(spec: ModelSpec) -> Path:
    """Local directory for a spec, after the safety checks; raises PonderError otherwise."""
    if spec.model.startswith("models:/"):
        from models.registry import download_model

        path = download_model(spec.model)
    else:
        path = Path(spec.model).expanduser()
        if not path.is_dir():
            raise PonderError(
                "model",
                f"no model directory at {path}",
                "pass an existing Hugging Face directory or a models:/NAME@ALIAS URI "
                "(`ponder models fetch-example` builds the example model)",
            )
    check_safe_checkpoint(path)
    check_remote_code(path, spec)
    return path.resolve()


def check_safe_checkpoint(path: Path) -> None:
    """Refuse directories whose weights are not safetensors."""
    if not (path / "config.json").is_file():
        raise PonderError(
            "model",
            f"{path} has no config.json",
            "point at a Hugging Face model directory (save_pretrained output)",
        )
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise PonderError(
            "model",
            f"{path} holds pickle weights ({', '.join(pickled)}); ponder loads only safetensors",
            "convert with model.save_pretrained(dir, safe_serialization=True)",
        )
    if not any(path.glob("*.safetensors")):
        raise PonderError(
            "model",
            f"{path} has no *.safetensors weights",
            "save the model with safe_serialization=True",
        )


def check_remote_code(path: Path, spec: ModelSpec) -> None:
    """Custom code runs only with trust_remote_code and an explicit allow-list entry."""
    needs_code = "auto_map" in json.loads((path / "config.json").read_text())
    allowed = set(get_settings().trust_remote_code_models)
    if spec.trust_remote_code and spec.model not in allowed and str(path) not in allowed:
        raise PonderError(
            "trust_remote_code",
            f"{spec.model} is not allowed to run custom code",
            f"add it to PONDER_TRUST_REMOTE_CODE_MODELS='[\"{spec.model}\"]' after reviewing "
            "its code, or drop trust_remote_code",
        )
    if needs_code and not spec.trust_remote_code:
        raise PonderError(
            "trust_remote_code",
            f"{spec.model} ships custom model code (auto_map in config.json)",
            "review the code, then pass trust_remote_code=True and list the model in "
            "PONDER_TRUST_REMOTE_CODE_MODELS",
        )


def load_pretrained(auto_class: Any, path: Path | str, **kwargs: Any) -> Any:
    """``auto_class.from_pretrained`` for every model ponder loads (policies, ORM, PRM,
    backbones): the directory must pass the safetensors and custom-code checks first, and
    transformers is told to read safetensors only, so a pickle ``.bin`` never loads."""
    directory = resolve_model_dir(ModelSpec(model=str(path)))
    return auto_class.from_pretrained(directory, use_safetensors=True, **kwargs)

"""Process-wide settings, read once from the environment (prefix ``PONDER_``).

Everything ponder writes lives under ``home`` unless a setting points elsewhere, so a
fresh checkout runs on embedded defaults (SQLite MLflow, ephemeral Prefect) and a real
deployment only sets a few variables. Settings sit in ``models`` because that is the
lowest layer that needs them; ``domains`` stays free of configuration (it only defines the
redaction schema that ``redaction`` overrides use).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domains.privacy import RedactionConfig

Backend = Literal["auto", "vllm", "transformers", "simulated"]
MLFLOW_HTTP_DEFAULTS = {  # the user's own values win
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class Settings(BaseSettings):
    """Resolved configuration; paths default to folders under ``home``."""

    model_config = SettingsConfigDict(env_prefix="PONDER_", extra="ignore")

    home: Path = Field(
        default=Path(".ponder"),
        description="Root folder for all local state: lake, models, MLflow, Prefect.",
    )
    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking/registry URI; default sqlite:///<home>/mlflow.db. "
        "Point it at an `mlflow server` (http://host:5000) in a real setup.",
    )
    artifact_root: Path | None = Field(
        default=None,
        description="Where MLflow stores artifacts for experiments ponder creates; "
        "default <home>/mlartifacts.",
    )
    lake_root: Path | None = Field(
        default=None, description="Root of the Parquet lake; default <home>/lake."
    )
    models_dir: Path | None = Field(
        default=None,
        description="Where local model directories (example model, caches) live; "
        "default <home>/models.",
    )
    backend: Backend = Field(
        default="auto",
        description="Generation backend: vllm, transformers, or auto (vLLM when importable); "
        "simulated is a sleeping stand-in for scaling benchmarks only (models.engine).",
    )
    trust_remote_code_models: list[str] = Field(
        default_factory=list,
        description="Model paths or registry names explicitly allowed to run custom code "
        "(trust_remote_code). Empty means no model may.",
    )
    vllm_memory_fraction: float = Field(
        default=0.2,
        gt=0.0,
        le=0.95,
        description="vLLM gpu_memory_utilization; on CPU it is the share of RAM for the KV "
        "cache (0.2 suits a 24 GB machine).",
    )
    vllm_cpu_reserved_cores: int | None = Field(
        default=0,
        ge=0,
        description="Cores vLLM CPU keeps away from its worker for the scheduler process "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU). vLLM reserves one by default, which halves throughput "
        "on a 2-core machine (measured: 244 -> 438 tok/s with 0); None keeps vLLM's default.",
    )
    vllm_tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        description="vLLM tensor_parallel_size: GPUs one engine shards the weights over "
        "(a model too large for one GPU; the run then needs the whole host).",
    )
    seed: int = Field(default=0, description="Default random seed for generation and training.")
    redact_key: SecretStr | None = Field(
        default=None,
        description="Secret for the identifier masks (same key, same masks). Default: a "
        "random key created once in <home>/.redact-key. Share it to compare masks across homes.",
    )
    redaction: dict[str, RedactionConfig] = Field(
        default_factory=dict,
        description="Per-domain redaction overrides, JSON: "
        '{"medicine": {"enabled": true, "detectors": [...], "patterns": {"kind": "regex"}}}; '
        "a domain not named keeps its own defaults.",
    )

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        self.artifact_root = (self.artifact_root or self.home / "mlartifacts").resolve()
        self.lake_root = (self.lake_root or self.home / "lake").resolve()
        self.models_dir = (self.models_dir or self.home / "models").resolve()
        if self.tracking_uri is None:
            self.tracking_uri = f"sqlite:///{self.home / 'mlflow.db'}"
        return self

    @property
    def prefect_home(self) -> Path:
        """Prefect's state folder: the user's PREFECT_HOME if set, else <home>/prefect."""
        return Path(os.environ.get("PREFECT_HOME") or self.home / "prefect")

    def apply_environment(self) -> None:
        """Create folders (owner only: patient notes and accounts live there) and export
        PREFECT_HOME so Prefect keeps its state under home. The process's umask becomes 077,
        so every file ponder, MLflow or Prefect writes from here on is 0600 and every folder
        0700."""
        os.umask(0o077)
        for path in (self.home, self.artifact_root, self.lake_root, self.models_dir):
            Path(path).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ.setdefault("PREFECT_HOME", str(self.prefect_home))
        # MLflow retries a dead server 7 times with doubling waits (minutes) by default;
        # ponder's own reachability check already retries, so keep the client's short
        for key, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)


PRIVATE = ("home", "lake_root", "artifact_root", "models_dir")  # folders only the owner reads


def loose_folders(settings: Settings) -> list[tuple[Path, int]]:
    """(folder, mode) of ponder's folders (and its logs) that others may read or enter."""
    folders = [Path(getattr(settings, name)) for name in PRIVATE] + [settings.home / "logs"]
    modes = [(p, p.stat().st_mode & 0o777) for p in folders if p.is_dir()]
    return [(p, mode) for p, mode in modes if mode & 0o077]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once; call ``get_settings.cache_clear()`` after env changes."""
    return Settings()

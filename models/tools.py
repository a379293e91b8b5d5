"""Calculator calls inside generation: pause at the closing marker, insert the exact result,
resume from the extended token ids.

``ToolGenerator`` wraps any ``Generator``, so every search strategy, evaluation and GRPO
rollout gets the same behaviour without knowing about it. The closing marker is added to
the stop strings. In each round, every sequence of the batch (all problems, all siblings)
that stopped at a call gets its result, and all of them resume in ONE inner Generator call
(``n=1`` each, prompt = old token ids + inserted ids, so vLLM's prefix cache hits). A
sequence that stops for any other reason (a step boundary, EOS, the token cap) is done.

Bounds: at most ``CalcLimits.per_step`` calls after the last step boundary and
``per_path`` calls in one completion. A sequence over a cap gets `` = error: call limit
reached`` and stops, with ``stop_reason`` saying why. Inserted tokens are not generated
tokens: they carry logprob 0 and are counted in ``n_inserted``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

from domains.calc import CLOSE, LIMITS, CalcCall, CalcLimits, evaluate, open_call
from models.engine import Completion, GenerationOutput, Generator, Prompt, SamplingConfig

STEP_BREAK = "\n\n"


class _Seq(BaseModel):
    """One completion being assembled across rounds."""

    prompt: list[int]
    ids: list[int] = Field(default_factory=list)
    mask: list[int] = Field(default_factory=list)  # 1 = the model's token, 0 = inserted
    logprobs: list[float] = Field(default_factory=list)
    text: str = ""
    logprob: float = 0.0
    inserted: int = 0
    calls: list[CalcCall] = Field(default_factory=list)
    finish: str = "stop"
    stop_reason: str | None = None
    waiting: bool = False  # stopped at a closing marker; resume after this round


class ToolGenerator(Generator):
    """A Generator whose completions have every calculator call executed."""

    def __init__(self, inner: Generator, limits: CalcLimits = LIMITS) -> None:
        # no super().__init__: the wrapped generator already holds the model and tokenizer
        self.inner = inner
        self.limits = limits
        self.spec = inner.spec
        self.model_dir = inner.model_dir
        self.tokenizer = inner.tokenizer
        self.backend = f"{inner.backend}+calc"
        self.rounds = 0  # inner Generator calls made (for the batching tests and benchmark)
        self.resume_cache = {"queries": 0, "hits": 0}  # prefix-cache tokens, resumed prompts

    def encode(self, prompt: Prompt) -> list[int]:
        return self.inner.encode(prompt)

    def _generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, progress: bool
    ) -> list[GenerationOutput]:
        user_stops = list(sampling.stop)
        stops = user_stops + ([CLOSE] if CLOSE not in user_stops else [])
        first = self._call(prompt_ids, sampling.model_copy(update={"stop": stops}), progress)
        seqs = [
            [self._absorb(_Seq(prompt=ids), c, user_stops) for c in out.completions]
            for ids, out in zip(prompt_ids, first, strict=True)
        ]
        flat = [s for group in seqs for s in group]
        while pending := [s for s in flat if s.waiting]:
            for s in pending:
                self._execute(s, sampling)
            resume = [s for s in pending if s.waiting]
            if not resume:
                break
            left = max(sampling.max_tokens - (len(s.ids) - s.inserted) for s in resume)
            params = sampling.model_copy(update={"n": 1, "stop": stops, "max_tokens": left})
            before = self.inner.prefix_cache_stats()
            outs = self._call([s.prompt + s.ids for s in resume], params, False)
            self._count_cache(before)
            for s, out in zip(resume, outs, strict=True):
                self._absorb(s, self._cap(s, out.completions[0], sampling), user_stops)
        return [
            GenerationOutput(
                prompt_token_ids=ids,
                completions=[_completion(s, sampling.logprobs) for s in group],
            )
            for ids, group in zip(prompt_ids, seqs, strict=True)
        ]

    def _call(
        self, prompts: list[list[int]], sampling: SamplingConfig, progress: bool
    ) -> list[GenerationOutput]:
        self.rounds += 1
        return self.inner.generate(prompts, sampling, progress)

    def _count_cache(self, before: dict[str, int] | None) -> None:
        after = self.inner.prefix_cache_stats()
        if before is not None and after is not None:
            for k in self.resume_cache:
                self.resume_cache[k] += after[k] - before[k]

    def _absorb(self, s: _Seq, c: Completion, user_stops: Sequence[str]) -> _Seq:
        """Append one inner completion; decide whether it waits on a call."""
        ids = self._clean_ids(c)
        lps = list(c.logprobs or [0.0] * len(c.token_ids))
        s.ids += ids
        s.mask += [1] * len(ids)
        s.logprobs += (lps + [0.0] * len(ids))[: len(ids)]
        s.text += c.text
        s.logprob += c.cumulative_logprob
        s.finish = c.finish_reason
        s.waiting = c.finish_reason == "stop" and c.text.endswith(CLOSE) and CLOSE not in user_stops
        if c.finish_reason == "length" and open_call(s.text + CLOSE) is not None:
            s.stop_reason = "token cap inside a calculator call"
        return s

    def _clean_ids(self, c: Completion) -> list[int]:
        """Token ids whose decoding is exactly the completion text: a stop string can end
        inside a token (">>." as one token), and the inserted result must follow ">>"."""
        if not c.text.endswith(CLOSE) or not c.token_ids:
            return list(c.token_ids)
        if self.tokenizer.decode(c.token_ids) == c.text:
            return list(c.token_ids)
        head = list(c.token_ids[:-1])
        rest = c.text[len(self.tokenizer.decode(head)) :]
        fixed = head + self.tokenizer.encode(rest, add_special_tokens=False)
        if self.tokenizer.decode(fixed) == c.text:
            return fixed
        return self.tokenizer.encode(c.text, add_special_tokens=False)

    def _execute(self, s: _Seq, sampling: SamplingConfig) -> None:
        """Run the call ``s`` stopped on (or let it go on when ">>" closed no call)."""
        expr = open_call(s.text)
        if expr is None:
            return  # ">>" without an open "<<": plain text, generation just continues
        step_calls = s.text.rsplit(STEP_BREAK, 1)[-1].count(CLOSE)
        if len(s.calls) >= self.limits.per_path or step_calls > self.limits.per_step:
            call = CalcCall(expression=expr, error="call limit reached")
            s.stop_reason = "calculator call limit"
            s.waiting = False
        else:
            call = evaluate(expr, self.limits)
        s.calls.append(call)
        ins = self.tokenizer.encode(call.inserted, add_special_tokens=False)
        s.ids += ins
        s.mask += [0] * len(ins)
        s.logprobs += [0.0] * len(ins)
        s.inserted += len(ins)
        s.text += call.inserted
        if len(s.ids) - s.inserted >= sampling.max_tokens:
            s.waiting, s.finish = False, "length"

    def _cap(self, s: _Seq, c: Completion, sampling: SamplingConfig) -> Completion:
        """Cut a resumed completion to what is left of this sequence's token budget (the
        round shares one ``max_tokens``, the largest any sequence has left)."""
        left = sampling.max_tokens - (len(s.ids) - s.inserted)
        if len(c.token_ids) <= left:
            return c
        ids = list(c.token_ids[:left])
        lps = (c.logprobs or [])[:left] or None
        return Completion(
            text=self.tokenizer.decode(ids),
            token_ids=ids,
            finish_reason="length",
            cumulative_logprob=sum(lps) if lps else c.cumulative_logprob * left / len(c.token_ids),
            logprobs=lps,
        )

    def prefix_cache_stats(self) -> dict[str, int] | None:
        return self.inner.prefix_cache_stats()

    def close(self) -> None:
        self.inner.close()


def _completion(s: _Seq, want_logprobs: bool) -> Completion:
    return Completion(
        text=s.text,
        token_ids=s.ids,
        finish_reason="length" if s.finish == "length" else "stop",
        cumulative_logprob=s.logprob,
        logprobs=s.logprobs if want_logprobs else None,
        calls=s.calls,
        n_inserted=s.inserted,
        tool_mask=s.mask,
        stop_reason=s.stop_reason,
    )


def with_tools(
    generator: Generator, tools: Sequence[str], limits: CalcLimits = LIMITS
) -> Generator:
    """The generator with the named tools executed during generation ("calc" is the only
    tool); an empty list returns it unchanged (the ``--no-tools`` comparison)."""
    from domains.calc import check_tools

    names = check_tools(tools)
    if not names or isinstance(generator, ToolGenerator):
        return generator
    return ToolGenerator(generator, limits)

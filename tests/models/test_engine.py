"""Generator tests on the tiny model: backend parity, sampling, stops, prefix caching."""

from __future__ import annotations

from pathlib import Path

import pytest

from domains.errors import PonderError
from models.engine import SamplingConfig, get_generator, sampling_config
from models.loading import ModelSpec

PROMPTS = [
    [{"role": "user", "content": f"What is {i} + {3 * i}? Think step by step."}] for i in range(5)
]


@pytest.fixture(scope="module")
def hf_engine(tiny_model: Path):
    return get_generator(ModelSpec(model=str(tiny_model), dtype="float32"), "transformers")


def test_greedy_parity_between_backends(vllm_engine, hf_engine) -> None:
    greedy = SamplingConfig(max_tokens=24)
    from_vllm = vllm_engine.generate(PROMPTS, greedy)
    from_hf = hf_engine.generate(PROMPTS, greedy)
    for a, b in zip(from_vllm, from_hf, strict=True):
        assert a.prompt_token_ids == b.prompt_token_ids
        assert a.completions[0].token_ids == b.completions[0].token_ids
        assert a.completions[0].cumulative_logprob == pytest.approx(
            b.completions[0].cumulative_logprob, abs=1e-2
        )


def test_vllm_n_samples_and_counts(vllm_engine) -> None:
    out = vllm_engine.generate(
        PROMPTS[:2], SamplingConfig(n=4, temperature=1.0, max_tokens=16, seed=1, logprobs=True)
    )
    assert [len(o.completions) for o in out] == [4, 4]
    first = out[0]
    assert len({tuple(c.token_ids) for c in first.completions}) > 1, "samples should differ"
    assert first.n_generated_tokens == sum(len(c.token_ids) for c in first.completions)
    for c in first.completions:
        assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids)
        assert c.cumulative_logprob == pytest.approx(sum(c.logprobs), abs=1e-3)
        assert c.cumulative_logprob < 0


@pytest.mark.parametrize("backend", ["vllm", "transformers"])
def test_stop_string_kept_and_finish_reasons(backend, vllm_engine, hf_engine) -> None:
    engine = vllm_engine if backend == "vllm" else hf_engine
    free = engine.generate(PROMPTS[:1], SamplingConfig(max_tokens=20))[0].completions[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 20
    stop = engine.tokenizer.decode(free.token_ids[6:8])
    assert stop.strip(), "the chosen stop string must be visible text"
    stopped = engine.generate(PROMPTS[:1], SamplingConfig(max_tokens=20, stop=[stop]))[0]
    comp = stopped.completions[0]
    assert comp.finish_reason == "stop"
    assert comp.text.endswith(stop)
    assert len(comp.token_ids) < 20


def test_prefix_cache_hits_on_shared_prefix(vllm_engine) -> None:
    shared = list(range(10, 400))  # spans several KV blocks
    before = vllm_engine.prefix_cache_stats()
    vllm_engine.generate([shared + [5]], SamplingConfig(max_tokens=4))
    mid = vllm_engine.prefix_cache_stats()
    vllm_engine.generate([shared + [6, 7]], SamplingConfig(max_tokens=4))
    after = vllm_engine.prefix_cache_stats()
    assert after["queries"] > mid["queries"] > before["queries"]
    assert after["hits"] - mid["hits"] >= 256, "the second call should reuse the cached prefix"


def test_token_id_prompts_pass_through(vllm_engine) -> None:
    ids = vllm_engine.encode(PROMPTS[0])
    by_ids = vllm_engine.generate([ids], SamplingConfig(max_tokens=8))[0]
    by_chat = vllm_engine.generate(PROMPTS[:1], SamplingConfig(max_tokens=8))[0]
    assert by_ids.prompt_token_ids == ids == by_chat.prompt_token_ids
    assert by_ids.completions[0].token_ids == by_chat.completions[0].token_ids


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 0),
        ("temperature", -0.1),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("max_tokens", 0),
        ("stop", [""]),
    ],
)
def test_sampling_out_of_range_names_field(field: str, value: object) -> None:
    with pytest.raises(PonderError) as err:
        sampling_config(**{field: value})
    assert err.value.field == f"sampling.{field}"
    assert err.value.fix


def test_engine_is_reused_per_process(vllm_engine, tiny_model: Path) -> None:
    again = get_generator(ModelSpec(model=str(tiny_model), dtype="float32"), "vllm")
    assert again is vllm_engine


def test_seeded_sampling_large_batch_is_reproducible(vllm_engine) -> None:
    """Enough prompts to exceed one step's token budget: seeded requests must not crash
    (vLLM CPU chunked prefill bug) and must reproduce."""
    prompts = [list(range(20 + i, 120 + i)) for i in range(64)]
    sampling = SamplingConfig(n=4, temperature=1.0, max_tokens=8, seed=7)
    first = vllm_engine.generate(prompts, sampling)
    second = vllm_engine.generate(prompts, sampling)
    assert [len(o.completions) for o in first] == [4] * 64
    assert [[c.token_ids for c in o.completions] for o in first] == [
        [c.token_ids for c in o.completions] for o in second
    ]


def test_the_simulated_engine_sleeps_per_token_and_uses_the_tokenizer(tiny_model, monkeypatch):
    """The scaling bench's stand-in (never chosen by auto): a sleep per generated token, and
    well-formed completions of exactly max_tokens tokens."""
    import time

    from models.engine import SimulatedGenerator

    monkeypatch.setenv("PONDER_SIMULATED_MS_PER_TOKEN", "1")
    engine = SimulatedGenerator(ModelSpec(model=str(tiny_model)))
    start = time.perf_counter()
    out = engine.generate(PROMPTS, SamplingConfig(n=2, max_tokens=20, logprobs=True))
    assert time.perf_counter() - start >= 0.2  # 5 prompts x 2 samples x 20 tokens x 1 ms
    assert [len(o.completions) for o in out] == [2] * len(PROMPTS)
    done = out[0].completions[0]
    assert len(done.token_ids) == 20 and done.finish_reason == "length"
    assert done.logprobs == [-1.0] * 20


@pytest.mark.parametrize(
    "content",
    ["What is 2 + 3?", "Patiënt née à Zürich, 体重 70 kg 🙂; " * 20, "x" * 600, "\n\n  \t" * 50],
)
def test_fits_agrees_with_the_exact_token_count_at_every_budget(tiny_model, content) -> None:
    """The context check skips the tokenizer only where the rendered text's bytes prove the
    fit; at every budget near the token count and near the byte count it says what
    counting the tokens says (non-ASCII, emoji and whitespace runs included)."""
    from models.engine import TokenizerOnly

    engine = TokenizerOnly(ModelSpec(model=str(tiny_model)))
    prompt = [{"role": "user", "content": content}]
    n = len(engine.encode(prompt))
    text = engine.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    size = len(text.encode("utf-8"))
    for budget in [*range(n - 3, n + 4), *range(size - 3, size + 4)]:
        assert engine.fits(prompt, budget) == (n <= budget), (budget, n, size)


def test_fits_tokenizes_only_when_the_bytes_do_not_decide(tiny_model, monkeypatch) -> None:
    from models.engine import TokenizerOnly

    engine = TokenizerOnly(ModelSpec(model=str(tiny_model)))
    n = len(engine.encode(PROMPTS[0]))
    monkeypatch.setattr(engine, "encode", lambda p: pytest.fail("tokenized a prompt that fits"))
    assert engine.fits(PROMPTS[0], 4096)
    assert engine.fits([1, 2, 3], 3) and not engine.fits([1, 2, 3], 2)
    monkeypatch.setattr(engine, "encode", lambda p: [0] * n)
    assert not engine.fits(PROMPTS[0], n - 1)

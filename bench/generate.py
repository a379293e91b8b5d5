"""Generation throughput: ponder's Generator on vLLM vs raw vLLM vs batched HF ``generate``.

Same prompts, same sampling, same model, one process. The raw-vLLM run reuses the very
engine ponder started, so a/b isolates the wrapper's cost (prompt encoding, result
conversion); a/c is what choosing vLLM buys over transformers. After a warm-up the
prompts sit in the prefix cache for every vLLM run alike. Prints tokens/s and the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

from models.engine import SamplingConfig, get_generator, to_vllm_params
from models.loading import ModelSpec

TEMPLATES = [
    "Cash deposits of ${a},000 and ${b},500 were made on one business day. Is a CTR due?",
    "PD is {a}.{b}% and LGD 45%. Compute the Basel IRB correlation R step by step.",
    "A {a}{b}-year-old man has hypertension. What is his CHA2DS2-VASc score?",
    "Na {a}3{b}, Cl 10{b}, HCO3 2{a}. What is the anion gap?",
    "What is {a}{b} + {b}{a}? Think step by step.",
    "Account {a} sends funds to {b} accounts within an hour. Which AML typology is this?",
    "QT is {a}{b}0 ms at heart rate {b}{a} bpm. What is the QTc by Bazett?",
    "A patient weighs {a}{b} kg and is 1.{b}{a} m tall. What is the BMI?",
]


def bench_prompts(count: int) -> list[list[dict[str, str]]]:
    """``count`` distinct chat prompts built from domain-flavoured templates."""
    out = []
    for i in range(count):
        text = TEMPLATES[i % len(TEMPLATES)].format(a=1 + i % 9, b=(i * 7) % 10)
        out.append([{"role": "user", "content": text}])
    return out


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models:/ponder-base-policy@champion")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--hf-batch", type=int, default=16, help="prompts per HF batch")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--json", type=Path, default=Path(".ponder/bench/generate.json"))
    args = parser.parse_args()

    prompts = bench_prompts(args.prompts)
    sampling = SamplingConfig(
        n=args.n, temperature=0.8, top_p=0.95, max_tokens=args.max_tokens, seed=0
    )
    ponder = get_generator(ModelSpec(model=args.model), "vllm")
    ids = [ponder.encode(p) for p in prompts]
    params = to_vllm_params(sampling)

    def run_ponder() -> int:
        return sum(o.n_generated_tokens for o in ponder.generate(prompts, sampling))

    def run_raw() -> int:
        outs = ponder.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs)

    run_ponder()  # warm-up: compiles paths and fills the prefix cache for all vLLM runs
    results = {}
    for name, fn in (
        ("a_ponder_vllm", run_ponder),
        ("b_raw_vllm", run_raw),
        ("a_ponder_vllm_2", run_ponder),
        ("b_raw_vllm_2", run_raw),
    ):
        results[name] = timed(fn)
    backend = ponder.backend
    ponder.close()
    if not args.skip_hf:
        hf = get_generator(ModelSpec(model=args.model, dtype="float32"), "transformers")
        hf.batch_size = args.hf_batch
        results["c_hf_generate"] = timed(
            lambda: sum(o.n_generated_tokens for o in hf.generate(prompts, sampling, True))
        )
    report(results, args, backend)


def report(results: dict[str, tuple[float, int]], args: argparse.Namespace, backend: str) -> None:
    tps = {k: tokens / secs for k, (secs, tokens) in results.items()}
    a = max(tps["a_ponder_vllm"], tps["a_ponder_vllm_2"])
    b = max(tps["b_raw_vllm"], tps["b_raw_vllm_2"])
    print(
        f"# bench/generate  model={args.model} backend={backend} machine={platform.node()} "
        f"cpus={_cpus()}"
    )
    print(
        f"# {args.prompts} prompts x n={args.n} x max_tokens={args.max_tokens}, "
        f"temperature=0.8 top_p=0.95 seed=0; HF fp32 batch={args.hf_batch} prompts"
    )
    for name, (secs, tokens) in results.items():
        print(f"{name:18s} {tokens:7d} tokens  {secs:8.1f} s  {tokens / secs:8.1f} tok/s")
    print(f"a/b (ponder vs raw vLLM, best of 2 each) = {a / b:.3f}   goal >= 0.95")
    summary = {"tok_s": tps, "a_over_b": a / b}
    if "c_hf_generate" in tps:
        print(
            f"a/c (ponder vLLM vs HF generate)        = {a / tps['c_hf_generate']:.2f}"
            "   goal >= 3 on CPU"
        )
        summary["a_over_c"] = a / tps["c_hf_generate"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"settings": vars(args) | {"json": str(args.json)}, "results": results, **summary},
            indent=2,
        )
    )


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()

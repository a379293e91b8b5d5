"""Inference benchmarks on the example model: overhead, batching, quality vs budget, scale.

1. overhead: the ``infer`` flow (self_consistency, N=4) against raw ``vllm.LLM.generate`` on
   the same prompt token ids and sampling parameters, on the same engine (goal >= 0.95).
2. batching: generated tokens/s of beam and MCTS against best_of_n at the same width
   (goal >= 0.8), and the prefix-cache hit rate of the tree searches (goal >= 50%).
3. quality: accuracy of each strategy at N in --widths on medicine and finance cases at
   difficulty 2, plotted against generated tokens (PNG).
4. scale: time per case and peak RSS of the flow at --scale cases vs 10x as many.
Pick parts with --parts; everything prints its settings and measured figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import polars as pl

from domains.base import get_domain
from models.engine import get_generator, to_vllm_params
from models.loading import ModelSpec
from models.search import SearchConfig, run_search
from models.search.base import Problem, sampling
from models.search.scorers import LogprobScorer
from tasks.infer import answer_key

MODEL = "models:/ponder-base-policy@champion"


def _cases(domain: str, n: int, difficulty: int = 2, seed: int = 7) -> list:
    return get_domain(domain).generate(n, seed, difficulty=difficulty)


def _file(cases: list, path: Path) -> Path:
    pl.DataFrame(
        [
            {"family": c.family, "inputs": json.dumps(c.inputs), "truth": json.dumps(c.truth)}
            for c in cases
        ]
    ).write_csv(path)
    return path


def _problems(domain: str, cases: list) -> list[Problem]:
    d = get_domain(domain)
    return [
        Problem(id=c.id, prompt=d.prompt(c), answer_of=lambda t, c=c: answer_key(d, c, t))
        for c in cases
    ]


def overhead(args: argparse.Namespace, engine, tmp: Path) -> None:
    from flows.infer import InferParams, infer

    cases = _cases("medicine", args.cases)
    d = get_domain("medicine")
    cfg = SearchConfig(width=4, max_tokens=4 * args.tokens, temperature=0.8, seed=0)
    ids = [engine.encode(d.prompt(c)) for c in cases]
    params = to_vllm_params(sampling(cfg, 4, args.tokens, stop=False))
    engine.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)  # warm
    start = time.perf_counter()
    outs = engine.llm.generate([{"prompt_token_ids": i} for i in ids], params, use_tqdm=False)
    raw_s = time.perf_counter() - start
    raw_tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
    src = _file(cases, tmp / "overhead.csv")
    warm = _file(cases[:2], tmp / "warm.csv")  # start Prefect's API and MLflow's DB first
    infer(
        InferParams(
            domain="medicine",
            input=str(warm),
            model=args.model,
            strategy="cot",
            width=1,
            max_tokens=16,
            log_traces=0,
            max_model_len=args.max_model_len,
        )
    )
    start = time.perf_counter()
    out = infer(
        InferParams(
            domain="medicine",
            input=str(src),
            model=args.model,
            strategy="self_consistency",
            width=4,
            max_tokens=4 * args.tokens,
            temperature=0.8,
            shard_size=args.cases,
            log_traces=0,
            max_model_len=args.max_model_len,
        )
    )
    flow_s = time.perf_counter() - start
    flow_tokens = int(out.tokens_per_case * out.cases)
    a, b = flow_tokens / flow_s, raw_tokens / raw_s
    print(f"[overhead] {args.cases} medicine cases x N=4 x {args.tokens} tokens, T=0.8")
    print(f"  infer flow (Prefect+MLflow+report): {flow_tokens} tok {flow_s:.1f} s {a:.1f} tok/s")
    print(f"  raw LLM.generate:                   {raw_tokens} tok {raw_s:.1f} s {b:.1f} tok/s")
    print(f"  ratio = {a / b:.3f} (goal >= 0.95)")


def batching(args: argparse.Namespace, engine) -> None:
    problems = _problems("medicine", _cases("medicine", args.cases, seed=11))
    cfg = SearchConfig(
        width=4,
        branch=2,
        max_tokens=4 * args.tokens,
        step_tokens=48,
        max_depth=6,
        simulations=6,
        temperature=0.8,
        seed=1,
    )
    rates = {}
    print(
        f"[batching] {args.cases} medicine cases, width 4 (beam k=2), "
        f"{4 * args.tokens} tokens/case cap, step 48 tokens"
    )
    for name in ("best_of_n", "beam", "mcts"):
        before = engine.prefix_cache_stats()
        start = time.perf_counter()
        results = run_search(name, problems, cfg, engine, LogprobScorer())
        secs = time.perf_counter() - start
        after = engine.prefix_cache_stats()
        tokens = sum(r.tokens_generated for r in results)
        hit = (after["hits"] - before["hits"]) / max(after["queries"] - before["queries"], 1)
        rates[name] = tokens / secs
        print(
            f"  {name:10s} {tokens:7d} tok {secs:7.1f} s {rates[name]:7.1f} tok/s  "
            f"calls {results[0].generator_calls:3d}  prefix-cache hit {hit:.1%}"
        )
    for name in ("beam", "mcts"):
        print(f"  {name}/best_of_n tokens/s = {rates[name] / rates['best_of_n']:.3f} (goal >= 0.8)")


def quality(args: argparse.Namespace, engine, tmp: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for domain in ("medicine", "finance_risk"):
        cases = _cases(domain, args.quality_cases, seed=21)
        problems = _problems(domain, cases)
        d = get_domain(domain)
        for name in ("cot", "self_consistency", "best_of_n", "weighted_best_of_n", "beam", "mcts"):
            for width in [1] if name == "cot" else args.widths:
                cfg = SearchConfig(
                    width=width,
                    branch=min(2, width),
                    max_tokens=width * args.tokens,
                    step_tokens=48,
                    max_depth=6,
                    simulations=width,
                    temperature=0.8,
                    seed=2,
                )
                results = run_search(name, problems, cfg, engine, LogprobScorer())
                acc = sum(
                    d.check(r.text, c).correct for r, c in zip(results, cases, strict=True)
                ) / len(cases)
                tokens = sum(r.tokens_generated for r in results) / len(cases)
                rows.append(
                    {
                        "domain": domain,
                        "strategy": name,
                        "N": width,
                        "accuracy": acc,
                        "tokens_per_case": tokens,
                    }
                )
                print(
                    f"[quality] {domain:12s} {name:18s} N={width:2d} acc {acc:6.1%} "
                    f"tokens/case {tokens:7.1f}"
                )
    frame = pl.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    for (domain, name), grp in frame.group_by("domain", "strategy", maintain_order=True):
        ax.plot(grp["tokens_per_case"], grp["accuracy"], marker="o", label=f"{domain}/{name}")
    ax.set_xlabel("generated tokens per case")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=6)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.write_csv(args.out / "infer_quality.csv")
    fig.savefig(args.out / "infer_quality.png", dpi=120, bbox_inches="tight")
    print(f"[quality] plot: {args.out / 'infer_quality.png'}")


def scale(args: argparse.Namespace, tmp: Path) -> None:
    from flows.infer import InferParams, infer

    per_case = {}
    for n in (args.scale, 10 * args.scale):
        src = _file(_cases("medicine", n, seed=31), tmp / f"scale-{n}.csv")
        start = time.perf_counter()
        infer(
            InferParams(
                domain="medicine",
                input=str(src),
                model=args.model,
                strategy="cot",
                width=1,
                max_tokens=args.scale_tokens,
                shard_size=100,
                log_traces=0,
                max_model_len=args.max_model_len,
            )
        )
        per_case[n] = (time.perf_counter() - start) / n
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"[scale] {n:5d} cases (cot, {args.scale_tokens} tokens): "
            f"{per_case[n] * 1000:.1f} ms/case, peak RSS so far {rss:,.0f} MB"
        )
    small, big = per_case[args.scale], per_case[10 * args.scale]
    print(
        f"[scale] time per case {10 * args.scale} vs {args.scale} = {big / small:.3f} (goal <= 1.1)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--parts", nargs="+", default=["overhead", "batching", "quality", "scale"])
    parser.add_argument("--cases", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=96, help="tokens per sample")
    parser.add_argument("--quality-cases", type=int, default=100)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--scale-tokens", type=int, default=32)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path(".ponder/bench"))
    args = parser.parse_args()
    from tasks.context import StageContext
    from tasks.infer import resolve_model

    # the same model resolution and engine the flow uses
    _, exact, local = resolve_model.fn(StageContext.open("medicine"), model=args.model)
    engine = get_generator(ModelSpec(model=str(local), max_model_len=args.max_model_len), "vllm")
    print(f"# bench/infer model={exact} engine={engine.backend}")
    with tempfile.TemporaryDirectory() as tmp:
        if "overhead" in args.parts:
            overhead(args, engine, Path(tmp))
        if "batching" in args.parts:
            batching(args, engine)
        if "quality" in args.parts:
            quality(args, engine, Path(tmp))
        if "scale" in args.parts:
            scale(args, Path(tmp))


if __name__ == "__main__":
    main()

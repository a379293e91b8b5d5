"""Reward-model benchmark on the example model: ORM accuracy, PRM AUROC, search with them.

Pairs are synthetic verifier outcomes: the chosen side is a case's reference solution
(verified correct), the rejected side splices the reference's first j-1 steps with the
steps of another case of the same family from step j on, kept only when the verifier
marks it wrong. Step targets come from the same construction: steps before the splice 1,
from the splice on 0 (the prefix of a correct solution can still reach the answer). Cases
are split 80/20 by case; the held-out fifth measures:

1. ORM held-out pairwise accuracy (goal >= 0.80);
2. PRM held-out step AUROC (goal >= 0.75);
3. weighted best-of-N (ORM) and beam (PRM) against self-consistency at the same width on
   --search-cases cases: accuracy and generated tokens per case.

Usage: python -m bench.reward [--pairs 2000] [--search-cases 100] [--domains ...]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from domains.base import Case, get_domain
from models.engine import get_generator
from models.loading import ModelSpec, resolve_model_dir
from models.prm import ProcessRM, auroc, step_rows, train_prm
from models.reward import (
    OutcomeRM,
    RewardScorer,
    RMTrainConfig,
    encode_segments,
    split_steps,
    train_orm,
)
from models.search import SearchConfig, run_search
from models.search.base import Problem
from tasks.infer import answer_key
from tasks.records import split_of

MODEL = "models:/ponder-base-policy@champion"


def spliced(case: Case, other: Case, rng: random.Random) -> tuple[list[str], int] | None:
    """Reference steps of ``case`` up to a random j, then ``other``'s from j on."""
    mine, theirs = split_steps(case.reference), split_steps(other.reference)
    if min(len(mine), len(theirs)) < 2:
        return None
    j = rng.randrange(1, min(len(mine), len(theirs)))
    return mine[:j] + theirs[j:], j


def synthetic(domain: str, n_pairs: int, seed: int) -> list[dict]:
    """``n_pairs`` verified (chosen, rejected) pairs with step labels, two per case."""
    d, rng = get_domain(domain), random.Random(seed)
    cases = d.generate(n_pairs, seed, difficulty=2)
    by_family: dict[str, list[Case]] = {}
    for c in cases:
        by_family.setdefault(c.family, []).append(c)
    out = []
    for case in cases:
        for _ in range(4):  # a few tries to find a splice the verifier rejects
            got = spliced(case, rng.choice(by_family[case.family]), rng)
            if got and not d.check("".join(got[0]), case).correct:
                steps, j = got
                out.append(
                    {"case": case, "chosen": split_steps(case.reference), "rejected": steps, "j": j}
                )
                break
        if len(out) >= n_pairs:
            break
    return out


def _split(pairs: list[dict]) -> tuple[list[dict], list[dict]]:
    held = [p for p in pairs if split_of(p["case"].id, 0.8, 0.2) != "train"]
    return [p for p in pairs if p not in held], held


def _orm_rows(tok, d, pairs: list[dict]) -> list[dict]:
    rows = []
    for p in pairs:
        msgs = d.prompt(p["case"])
        rows.append(
            {
                "chosen_ids": encode_segments(tok, msgs, ["".join(p["chosen"])])[0],
                "rejected_ids": encode_segments(tok, msgs, ["".join(p["rejected"])])[0],
                "margin": 0.0,
            }
        )
    return rows


def _prm_items(d, pairs: list[dict]) -> list[tuple]:
    items = []
    for p in pairs:
        msgs = d.prompt(p["case"])
        items.append((msgs, p["chosen"], [1.0] * len(p["chosen"])))
        labels = [1.0 if i < p["j"] else 0.0 for i in range(len(p["rejected"]))]
        items.append((msgs, p["rejected"], labels))
    return items


def reward_models(args, domain: str, backbone: Path, tmp: Path) -> tuple[Path, Path]:
    from transformers import AutoTokenizer

    d, tok = get_domain(domain), AutoTokenizer.from_pretrained(backbone)
    train, held = _split(synthetic(domain, args.pairs, seed=3))
    cfg = RMTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        learning_rate=args.lr,
        max_length=args.max_length,
        max_steps=args.max_steps,
    )
    print(f"[{domain}] {len(train)} train / {len(held)} held-out pairs; {cfg}")
    start = time.perf_counter()
    orm_dir, _ = train_orm(_orm_rows(tok, d, train), backbone, tmp / "orm", cfg)
    orm_s = time.perf_counter() - start
    orm = OutcomeRM(orm_dir)
    seqs = [
        s for r in _orm_rows(orm.tokenizer, d, held) for s in (r["chosen_ids"], r["rejected_ids"])
    ]
    scores = orm.raw_scores(seqs)
    acc = sum(c > r for c, r in zip(scores[0::2], scores[1::2], strict=True)) / max(len(held), 1)
    print(
        f"[{domain}] ORM held-out pairwise accuracy {acc:.3f} (goal >= 0.80); "
        f"trained in {orm_s:.0f} s"
    )
    start = time.perf_counter()
    prm_dir, _ = train_prm(step_rows(tok, _prm_items(d, train)), backbone, tmp / "prm", cfg)
    prm_s = time.perf_counter() - start
    prm = ProcessRM(prm_dir)
    items = _prm_items(d, held)
    values = prm.values([prm.encode(m, s) for m, s, _ in items])
    labels = [int(t) for _, _, ts in items for t in ts]
    auc = auroc(labels, [v for vs in values for v in vs])
    print(
        f"[{domain}] PRM held-out step AUROC {auc:.3f} (goal >= 0.75) over {len(labels)} "
        f"steps; trained in {prm_s:.0f} s"
    )
    return orm_dir, prm_dir


def search(args, domain: str, engine, orm_dir: Path, prm_dir: Path) -> None:
    d = get_domain(domain)
    cases = d.generate(args.search_cases, 99, difficulty=2)
    problems = [
        Problem(id=c.id, prompt=d.prompt(c), answer_of=lambda t, c=c: answer_key(d, c, t))
        for c in cases
    ]
    learned = RewardScorer(orm=OutcomeRM(orm_dir), prm=ProcessRM(prm_dir))
    cfg = SearchConfig(
        width=args.width,
        branch=2,
        max_tokens=args.width * args.tokens,
        step_tokens=args.step_tokens,
        max_depth=6,
        temperature=0.8,
        seed=5,
    )
    from models.search.scorers import LogprobScorer

    for name, scorer in (
        ("self_consistency", LogprobScorer()),
        ("weighted_best_of_n", learned),
        ("beam", learned),
    ):
        start = time.perf_counter()
        results = run_search(name, problems, cfg, engine, scorer)
        secs = time.perf_counter() - start
        acc = sum(d.check(r.text, c).correct for r, c in zip(results, cases, strict=True)) / len(
            cases
        )
        tokens = sum(r.tokens_generated for r in results) / len(cases)
        print(
            f"[{domain}] {name:18s} N={args.width} scorer {results[0].scorer:14s} "
            f"acc {acc:6.1%}  tokens/case {tokens:7.1f}  {secs:6.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--domains", nargs="+", default=["medicine", "finance_risk"])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--search-cases", type=int, default=100)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=192, help="tokens per sample")
    parser.add_argument("--step-tokens", type=int, default=96)
    parser.add_argument("--out", type=Path, default=Path(".ponder/bench"))
    parser.add_argument("--reuse", action="store_true", help="reuse RMs trained by a past run")
    args = parser.parse_args()
    backbone = resolve_model_dir(ModelSpec(model=args.model))
    print(f"[settings] backbone {args.model} -> {backbone}; {vars(args)}")
    # The engine reserves its memory first; training afterwards takes what is left.
    engine = get_generator(ModelSpec(model=str(backbone), max_model_len=4096))
    for dom in args.domains:
        target = args.out / f"rm-{dom}"
        if args.reuse and (target / "orm" / "model").is_dir():
            dirs = target / "orm" / "model", target / "prm" / "model"
            print(f"[{dom}] reusing {target}")
        else:
            dirs = reward_models(args, dom, backbone, target)
        if args.search_cases:
            search(args, dom, engine, *dirs)


if __name__ == "__main__":
    main()

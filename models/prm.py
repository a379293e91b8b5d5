"""Process reward / value model (PRM): a value in [0, 1] at every step boundary.

Step targets come from three places (built in the tasks layer): reviewers' step labels,
Math-Shepherd Monte-Carlo returns (``mc_step_returns``: complete each step prefix K times
with the policy and count the completions that reach a correct answer), and TD(lambda)
targets that blend those returns with the next step's estimated value
(``td_lambda_targets``). The model is a token classifier with one output, read at the
last token of each step and trained with BCE on the soft targets (TRL's experimental
PRMTrainer takes only hard 0/1 labels, so a small transformers ``Trainer`` subclass does
it). ``ProcessRM`` scores the steps of many search paths in one batched pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from domains.errors import PonderError
from models import progress
from models.engine import Generator, SamplingConfig
from models.loading import load_pretrained
from models.reward import (
    LoadedRM,
    RMTrainConfig,
    encode_segments,
    lora_config,
    messages_of,
    pad_batch,
    rm_args,
    save_merged,
)


def td_lambda_targets(
    mc: Sequence[float], next_values: Sequence[float | None], lam: float
) -> list[float]:
    """Per-step targets ``y_t = lam * mc_t + (1 - lam) * v_{t+1}``.

    ``mc[t]`` is step t's Monte-Carlo return (fraction of rollouts from its prefix that
    reach a correct answer; for the last step, the path's own verified outcome).
    ``next_values[t]`` is the estimated value of step t+1 (the current PRM's prediction),
    None where there is no estimate: then step t+1's MC return stands in. The last step
    has no successor, so its target is its MC return. ``lam = 1`` is pure Monte-Carlo;
    ``lam = 0`` is one-step TD (no intermediate rewards, no discount).
    """
    if not 0.0 <= lam <= 1.0:
        raise PonderError("td_lambda", f"{lam} is out of range", "use a value in [0, 1]")
    if len(next_values) != len(mc):
        raise PonderError("next_values", "length differs from mc", "give one per step")
    out = []
    for t, m in enumerate(mc):
        if t == len(mc) - 1:
            out.append(float(m))
            continue
        v = next_values[t] if next_values[t] is not None else mc[t + 1]
        out.append(lam * float(m) + (1.0 - lam) * float(v))
    return out


def mc_step_returns(
    generator: Generator,
    prefixes: Sequence[list[int]],
    rollouts: int,
    sampling: SamplingConfig,
    is_correct: Callable[[int, str], bool],
) -> list[float]:
    """Math-Shepherd labels: for each token-id prefix, the share of ``rollouts``
    completions (all drawn in ONE Generator call, ``n=rollouts``) that ``is_correct``
    accepts. ``is_correct(prefix index, completion text)`` sees only the new text."""
    if not prefixes:
        return []
    params = sampling.model_copy(update={"n": rollouts})
    results = generator.generate(list(prefixes), params)
    return [
        sum(is_correct(i, c.text) for c in res.completions) / max(len(res.completions), 1)
        for i, res in enumerate(results)
    ]


def step_rows(
    tokenizer: Any,
    items: Sequence[tuple[Sequence[dict[str, str]], Sequence[str], Sequence[float]]],
) -> list[dict[str, Any]]:
    """(messages, step texts, targets) -> rows with input_ids, ends, targets."""
    rows = []
    for messages, steps, targets in items:
        if len(steps) != len(targets):
            raise PonderError("targets", "one target per step is needed", "check the labels")
        ids, ends = encode_segments(tokenizer, messages, steps)
        rows.append({"input_ids": ids, "ends": ends, "targets": [float(t) for t in targets]})
    return rows


class _Collator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids, mask = pad_batch([b["input_ids"] for b in batch], self.pad_id)
        labels = torch.full(ids.shape, -100.0)
        for i, b in enumerate(batch):
            labels[i, b["ends"]] = torch.tensor(b["targets"], dtype=torch.float)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _trainer_class() -> type:
    import torch
    from transformers import Trainer

    class StepValueTrainer(Trainer):
        """BCE on soft targets at step-end tokens; every other position is ignored."""

        def compute_loss(
            self, model: Any, inputs: dict, return_outputs: bool = False, **_: Any
        ) -> Any:
            labels = inputs.pop("labels")
            out = model(**inputs)
            logits = out.logits[..., 0]
            keep = labels != -100.0
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[keep].float(), labels[keep]
            )
            return (loss, out) if return_outputs else loss

    return StepValueTrainer


def train_prm(
    rows: Sequence[dict[str, Any]], backbone: Path, out_dir: Path, cfg: RMTrainConfig
) -> tuple[Path, list[dict[str, float]]]:
    """Train the step-value head (and backbone, or LoRA on GPU) on ``step_rows`` output."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForTokenClassification, AutoTokenizer, TrainingArguments

    if not rows:
        raise PonderError("steps", "no step targets", "collect step feedback or predictions")
    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_pretrained(
        AutoModelForTokenClassification, backbone, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    peft = lora_config(cfg, "TOKEN_CLS")
    if peft is not None:
        model = get_peft_model(model, peft)
    args = TrainingArguments(
        remove_unused_columns=False, **rm_args(cfg, out_dir, examples=len(rows))
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(list(rows)),
        data_collator=_Collator(tokenizer.pad_token_id),
        callbacks=[progress.trainer_callback("PRM steps")],
    )
    trainer.train()
    return save_merged(trainer.model, tokenizer, out_dir / "model"), trainer.state.log_history


class ProcessRM(LoadedRM):
    """A trained PRM: step values in [0, 1] for many paths in one batched pass."""

    head = "AutoModelForTokenClassification"

    def __init__(self, path: Path, name: str = "prm", batch_size: int = 8) -> None:
        super().__init__(path, name, batch_size)

    def values(self, rows: Sequence[tuple[list[int], list[int]]]) -> list[list[float]]:
        """Sigmoid values at the given end positions of each token sequence."""
        import torch

        def take(logits: Any, idx: list[int]) -> list[list[float]]:
            probs = torch.sigmoid(logits[..., 0])
            return [probs[b, rows[i][1]].tolist() for b, i in enumerate(idx)]

        return self.forward([r[0] for r in rows], take)

    def encode(self, messages: Sequence[dict[str, str]], segments: Sequence[str]) -> tuple:
        return encode_segments(self.tokenizer, messages, segments)

    def score_paths(self, items: Sequence[tuple[Any, list[Any], str]]) -> list[list[float]]:
        rows = [self.encode(messages_of(p), [n.text for n in steps]) for p, steps, _ in items]
        return self.values(rows)

    def score(self, problem: Any, steps: list[Any], text: str) -> list[float]:
        return self.score_paths([(problem, steps, text)])[0]

    def score_outcomes(self, problem: Any, texts: list[str], paths: list[Any]) -> list[float]:
        items = [(problem, path, t) for path, t in zip(paths, texts, strict=True)]
        return [s[-1] if s else 0.0 for s in self.score_paths(items)]


def tree_td_targets(
    children: dict[int, list[int]],
    mc: dict[int, float],
    values: dict[int, float] | None,
    lam: float,
) -> dict[int, float]:
    """TD(lambda) targets on a tree: ``y_n = lam * mc_n + (1 - lam) * mean_c v_c`` over the
    children c of node n that have an MC return (``values[c]`` when the current PRM gave
    one, else ``mc[c]``); a node without such children keeps its MC return. On a chain
    this is ``td_lambda_targets``."""
    if not 0.0 <= lam <= 1.0:
        raise PonderError("td_lambda", f"{lam} is out of range", "use a value in [0, 1]")
    values = values or {}
    out = {}
    for node, m in mc.items():
        kids = [c for c in children.get(node, []) if c in mc]
        if not kids:
            out[node] = float(m)
            continue
        v = sum(values.get(c, mc[c]) for c in kids) / len(kids)
        out[node] = lam * float(m) + (1.0 - lam) * v
    return out


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve; None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    if len(set(labels)) < 2:
        return None
    return float(roc_auc_score(list(labels), list(scores)))

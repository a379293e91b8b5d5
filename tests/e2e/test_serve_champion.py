"""Real-client check after a promotion: the champion loads with MLflow's own loader and
with vLLM, serves behind `vllm serve` on loopback, and answers the `openai` client.

Minutes and a second vLLM process: `make e2e` runs it (`-m e2e`), `make test` does not.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from models.registry import download_model, promote, register_hf_dir

pytestmark = pytest.mark.e2e
NAME = "ponder-medicine-policy"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"vllm serve exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(2)
    raise AssertionError(f"vllm serve not healthy after {timeout_s} s")


def test_champion_loads_with_mlflow_and_vllm_and_serves_openai(tiny_model: Path) -> None:
    import mlflow
    import openai

    from models.engine import (
        SamplingConfig,
        get_generator,
        release_generator,
        vllm_serve_command,
    )
    from models.loading import ModelSpec

    version = str(register_hf_dir(tiny_model, NAME).version)
    promote(NAME, version, reason="e2e")
    uri = f"models:/{NAME}@champion"
    pipe = mlflow.transformers.load_model(uri)  # MLflow's own loader
    assert pipe("Hello", max_new_tokens=4)[0]["generated_text"].startswith("Hello")
    spec = ModelSpec(model=uri, dtype="float32", max_model_len=512)
    out = get_generator(spec, "vllm").generate(
        [[{"role": "user", "content": "Hello"}]], SamplingConfig(max_tokens=4)
    )
    assert len(out[0].completions[0].token_ids) > 0
    release_generator(spec, "vllm")
    local, port = download_model(uri), _free_port()
    extra = ["--dtype", "float32", "--max-model-len", "512", "--enforce-eager"]
    cmd = vllm_serve_command(local, NAME, port=port, extra=extra)
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        chat = client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        assert chat.choices[0].message.content is not None
        assert chat.usage.completion_tokens > 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)

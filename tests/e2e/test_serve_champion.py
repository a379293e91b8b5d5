"""Real-client check after a promotion: the champion loads with MLflow's own loader and
with vLLM, serves behind `vllm serve` on loopback, and answers the `openai` client.

The champion is a real model whose hand-set weights make it answer every chat prompt with
``Answer: 2`` (``tests/answering_lm.py``), so each client's text is checked exactly, and
MLflow's loader is checked token for token against transformers on the same directory.
About 90 s and a second vLLM process; part of `make test` (marker `serving`) and of
`make e2e`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from models.registry import download_model, promote, register_hf_dir

pytestmark = pytest.mark.serving
ANSWER = "Answer: 2"
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


def test_champion_loads_with_mlflow_and_vllm_and_serves_openai(tmp_path: Path) -> None:
    import mlflow
    import openai

    from models.engine import (
        SamplingConfig,
        get_generator,
        release_generator,
        vllm_serve_command,
    )
    from models.loading import ModelSpec
    from tests.answering_lm import build_answering_lm

    model = build_answering_lm(tmp_path / "answering", ANSWER)
    version = str(register_hf_dir(model, NAME).version)
    promote(NAME, version, reason="e2e")
    uri = f"models:/{NAME}@champion"
    pipe = mlflow.transformers.load_model(uri)  # MLflow's own loader
    chat = [{"role": "user", "content": "Hello"}]
    got = pipe(chat, max_new_tokens=8, do_sample=False)[0]["generated_text"][-1]["content"]
    assert got == ANSWER, got
    spec = ModelSpec(model=uri, dtype="float32", max_model_len=512)
    out = get_generator(spec, "vllm").generate([chat], SamplingConfig(max_tokens=8))
    assert out[0].completions[0].text == ANSWER
    release_generator(spec, "vllm")
    local, port = download_model(uri), _free_port()
    extra = ["--dtype", "float32", "--max-model-len", "512", "--enforce-eager"]
    cmd = vllm_serve_command(local, NAME, port=port, extra=extra)
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        assert reply.choices[0].message.content == ANSWER
        assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens > 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)

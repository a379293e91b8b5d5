"""Safe loading and serving, checked over the whole source tree: no eval/exec/pickle on
user or model content, no trust_remote_code switched on in code, loopback by default."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flows.serve import ServeConfig
from models.engine import vllm_serve_command
from models.loading import ModelSpec, check_safe_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("domains", "models", "tasks", "flows", "bench")
BANNED_CALLS = {"eval", "exec", "compile", "__import__"}
UNPICKLERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("cloudpickle", "load"),
    ("dill", "load"),
    ("dill", "loads"),
    ("yaml", "load"),
    ("marshal", "loads"),
    ("shelve", "open"),
}
# Our own objects between our own processes, never user or model content:
ALLOWED = {("flows/pipeline.py", "cloudpickle.loads")}  # this run's Prefect context, to a child


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _calls(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        if isinstance(fn, ast.Name) and fn.id in BANNED_CALLS:
            found.append((fn.id, node.lineno))
        elif isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name):
            pair = (fn.value.id, fn.attr)
            if pair in UNPICKLERS:
                found.append((".".join(pair), node.lineno))
            if pair == ("torch", "load") and not any(
                k.arg == "weights_only" and getattr(k.value, "value", None) is True
                for k in node.keywords
            ):
                found.append(("torch.load without weights_only=True", node.lineno))
        for kw in node.keywords:
            if kw.arg == "trust_remote_code" and getattr(kw.value, "value", None) is True:
                found.append(("trust_remote_code=True", node.lineno))
    return found


def test_no_code_execution_or_unpickling_of_content() -> None:
    bad = [
        f"{p.relative_to(ROOT)}:{line} {what}"
        for p in _sources()
        for what, line in _calls(p)
        if (str(p.relative_to(ROOT)), what) not in ALLOWED
    ]
    assert not bad, bad


def test_the_audit_can_fail(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import pickle, torch\npickle.loads(b'')\neval('1')\ntorch.load('x')\n"
        "f(trust_remote_code=True)\n"
    )
    assert [w for w, _ in _calls(probe)] == [
        "pickle.loads",
        "eval",
        "torch.load without weights_only=True",
        "trust_remote_code=True",
    ]


def test_servers_bind_to_loopback_by_default() -> None:
    cfg = ServeConfig()
    assert cfg.host == "127.0.0.1" and cfg.prefect_url.startswith("http://127.0.0.1:")
    argv = vllm_serve_command(Path("/m"), "policy")
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_remote_code_is_off_unless_allowed_and_only_safetensors_load(tmp_path: Path) -> None:
    assert ModelSpec(model="x").trust_remote_code is False
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(Exception, match="pickle weights"):
        check_safe_checkpoint(tmp_path)

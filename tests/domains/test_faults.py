"""Failpoints: parsing the spec, and that ``kill`` is a real SIGKILL of this process."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys

import pytest

from domains import faults
from domains.faults import armed, failpoint


def test_spec_parses_names_actions_and_hits() -> None:
    assert armed("infer.shard=kill@2, lake.write=enospc") == {
        "infer.shard": ("kill", 2),
        "lake.write": ("enospc", 1),
    }
    assert armed("") == {}


@pytest.mark.parametrize("bad", ["infer.shard", "x=explode", "x=kill@0", "x=kill@two", "=kill"])
def test_a_malformed_spec_names_the_variable_and_the_form(bad: str) -> None:
    with pytest.raises(ValueError, match="PONDER_FAILPOINTS.*name=action\\[@hit\\]"):
        armed(bad)


def test_enospc_fires_on_its_hit_only(monkeypatch) -> None:
    monkeypatch.setenv("PONDER_FAILPOINTS", "t.point=enospc@2")
    monkeypatch.setattr(faults, "_hits", faults.Counter())
    failpoint("t.point")  # first hit: nothing
    failpoint("t.other")
    with pytest.raises(OSError) as err:
        failpoint("t.point")
    assert err.value.errno == errno.ENOSPC
    failpoint("t.point")  # third hit: nothing again


def test_kill_is_sigkill() -> None:
    code = "from domains.faults import failpoint; failpoint('t.kill'); print('survived')"
    env = {"PONDER_FAILPOINTS": "t.kill=kill", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL and "survived" not in done.stdout

"""The command line makes torch's OpenMP threads wait passively unless the user chose a policy."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = ("import os, sys\n"
         "assert 'torch' not in sys.modules\n"
         "import mechwork.cli\n"
         "print(os.environ.get('OMP_WAIT_POLICY'))\n")


def _policy_after_cli_import(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_passive_when_the_environment_says_nothing() -> None:
    assert _policy_after_cli_import(None) == "PASSIVE"


@pytest.mark.parametrize("value", ["ACTIVE", "active", "PASSIVE"])
def test_the_users_policy_is_kept(value: str) -> None:
    assert _policy_after_cli_import(value) == value


def test_set_before_the_command_loads_torch() -> None:
    """A command that loads torch sees the policy in its environment when torch starts (libgomp reads it then)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import os, sys, runpy\n"
            "import builtins\n"
            "seen = []\n"
            "real = builtins.__import__\n"
            "def spy(name, *a, **k):\n"
            "    if name == 'torch' and not seen:\n"
            "        seen.append(os.environ.get('OMP_WAIT_POLICY'))\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = spy\n"
            "from mechwork.cli import main\n"
            "rc = main(['analyze', 'fourier', 'modadd-113', '--quiet'])\n"
            "print(rc, seen[:1])\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 ['PASSIVE']", out.stdout + out.stderr

"""jaxsafety.xla_flags: the workaround flags are appended to the user's XLA_FLAGS, never replacing or duplicating
a flag the user set (e.g. ``--xla_cpu_max_isa=AVX2``, with which the suite is run to emulate another CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxsafety.xla_flags import CPU_WORKAROUND_FLAGS, with_cpu_workarounds_env


def test_workaround_flags_are_appended_to_the_users_flags():
    env = with_cpu_workarounds_env({"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}, single_threaded=True)
    assert env["XLA_FLAGS"].split() == [
        "--xla_cpu_max_isa=AVX2",
        *CPU_WORKAROUND_FLAGS,
        "--xla_cpu_multi_thread_eigen=false",
    ]
    assert with_cpu_workarounds_env({})["XLA_FLAGS"].split() == list(CPU_WORKAROUND_FLAGS)


def test_a_flag_the_user_set_wins_and_is_not_duplicated():
    user = "--xla_cpu_multi_thread_eigen=true  --xla_cpu_enable_concurrency_optimized_scheduler=true"
    env = with_cpu_workarounds_env({"XLA_FLAGS": user, "OTHER": "1"}, single_threaded=True, no_ynn=True)
    assert env["XLA_FLAGS"].split() == [*user.split(), "--xla_cpu_experimental_ynn_fusion_type="]
    assert env["OTHER"] == "1"
    # a flag whose name merely starts with a wanted flag's name does not count as setting it
    env = with_cpu_workarounds_env(
        {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen_extra=1"}, single_threaded=True
    )
    assert "--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"].split()


@pytest.mark.parametrize(
    "user,level",
    [("--xla_cpu_max_isa=AVX2", "0"), ("--xla_cpu_max_isa=SSE4_2 --xla_backend_optimization_level=2", "2")],
)
def test_conftest_keeps_the_users_flags_first_and_appends_its_own(user: str, level: str):
    """The suite's conftest (run here in a fresh process, as pytest does) adds its flags to a user's XLA_FLAGS:
    ``XLA_FLAGS=--xla_cpu_max_isa=AVX2 pytest`` runs the usual suite (optimisation level 0, the workarounds) under
    another ISA; a flag the user set (here an optimisation level) wins and is not duplicated."""
    repo = Path(__file__).resolve().parent.parent
    code = "import os, runpy; runpy.run_path('tests/conftest.py'); print(os.environ['XLA_FLAGS'])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        env={**os.environ, "XLA_FLAGS": user},
        capture_output=True,
        text=True,
        check=True,
    )
    flags = out.stdout.split()
    assert flags[: len(user.split())] == user.split()
    levels = [f for f in flags if f.startswith("--xla_backend_optimization_level=")]
    assert levels == [f"--xla_backend_optimization_level={level}"]
    assert set(CPU_WORKAROUND_FLAGS) <= set(flags)
    assert {"--xla_cpu_multi_thread_eigen=false", "--xla_cpu_experimental_ynn_fusion_type="} <= set(flags)

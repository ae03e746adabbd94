"""jaxsafety.xla_flags: the workaround flags are appended to the user's XLA_FLAGS, never replacing or duplicating
a flag the user set (e.g. ``--xla_cpu_max_isa=AVX2``, with which the suite is run to emulate another CPU)."""

from __future__ import annotations

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

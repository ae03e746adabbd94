"""PPO CartPole benchmark: the quick run produces a complete payload, and its PureJaxRL-style peer really learns."""

from __future__ import annotations

import math

import jax
import numpy as np

from benchmarks import ppo_cartpole, purejaxrl_ppo


def _positive(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_quick_run_payload_is_complete_and_positive():
    # SB3 is timed only where stable-baselines3 is installed (the benchmark checks, like pytest.importorskip)
    payload = ppo_cartpole.run(quick=True)
    budget = ppo_cartpole.QUICK
    assert [r["seeds"] for r in payload["jax"]] == list(budget.seeds)
    for row in payload["jax"]:
        for side in ("ours", ppo_cartpole.SAME, "purejaxrl"):
            rate = row[side]
            assert _positive(rate["steps_per_s"]) and _positive(rate["steps_per_s_best"])
            assert rate["env_steps_per_call"] == row["seeds"] * row["env_steps_per_seed"]
            assert _positive(rate["timing"]["compile_s"]) and rate["timing"]["repeats"] == budget.repeats
        assert _positive(row["ratio_ours_over_purejaxrl"])
        assert _positive(row[f"ratio_{ppo_cartpole.SAME}_over_purejaxrl"])
    for key in ("ours_over_purejaxrl", f"{ppo_cartpole.SAME}_over_purejaxrl"):
        assert set(payload["ratios"][key]) == {str(s) for s in budget.seeds}
    if ppo_cartpole.sb3_available():
        assert payload["sb3_skipped"] is None
        assert payload["sb3"]["best_threads"] in (1, 2)
        for threads in (1, 2):
            assert _positive(payload["sb3"][f"threads_{threads}"]["steps_per_s"])
        assert _positive(payload["ratios"]["ours_over_sb3_8_seeds"])
    else:
        assert payload["sb3"] is None and payload["sb3_skipped"]
    assert payload["final_return"] is None  # skipped in quick mode


def test_purejaxrl_reference_learns_cartpole():
    # 60 updates of 512 steps (one seed): a working PPO goes from ~20 (random policy) to well over 100. Measured
    # over 16 seeds (split(key(1000), 16), this AMD EPYC): first 5 updates 22.9-26.5 (< 40), last 5 104-191
    # (> 80: margin 24) and last / first >= 4.2 (> 2.5); key(0): 24.9 -> 170.2.
    config = purejaxrl_ppo.RefConfig(total_timesteps=60 * 512)
    _, metrics = jax.jit(purejaxrl_ppo.make_train(config))(jax.random.key(0))
    ret = np.asarray(metrics["episode_return"])
    assert ret.shape == (config.num_updates,)
    first, last = np.nanmean(ret[:5]), np.nanmean(ret[-5:])
    assert first < 40, first
    assert last > 2.5 * first and last > 80, (first, last)
    assert int(np.asarray(metrics["episodes"]).sum()) > 0


def test_last_episodes_mean_weights_by_episode_count():
    # last update: 1 episode of 500; the one before: 3 episodes averaging 100 -> 100 episodes need both
    ret = np.array([10.0, np.nan, 100.0, 500.0])
    cnt = np.array([50, 0, 3, 1])
    assert ppo_cartpole.last_episodes_mean(ret, cnt, n=1) == 500.0
    assert ppo_cartpole.last_episodes_mean(ret, cnt, n=4) == (3 * 100.0 + 500.0) / 4
    assert ppo_cartpole.last_episodes_mean(ret, cnt, n=100) == (50 * 10.0 + 3 * 100.0 + 500.0) / 54

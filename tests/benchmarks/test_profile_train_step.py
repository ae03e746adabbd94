"""The train-step profiler's pieces: HLO op categories, time attribution of overlapping events, fault cost."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from benchmarks import profile_train_step as prof


def test_hlo_categories_name_dots_copies_and_reductions():
    def f(a, b):
        return a @ b, jnp.sum(jnp.exp(a), axis=1), jnp.transpose(a) + 0.0, a * 3.0

    hlo = jax.jit(f).lower(jnp.ones((64, 32)), jnp.ones((32, 48))).compile().as_text()
    entry = hlo[hlo.index("ENTRY") :]
    cats = {k: v for k, v in prof.hlo_categories(hlo).items() if f"%{k} " in entry}
    by_kind = {}
    for name, kind in cats.items():
        by_kind.setdefault(kind, set()).add(name)
    # one matmul (a library fusion or a plain dot), one reduction, one layout copy, the multiply elementwise
    assert len(by_kind["dot"]) == 1 and len(by_kind["reduce"]) == 1 and len(by_kind["copy"]) == 1, cats
    assert any("multiply" in n for n in by_kind["elementwise"]), cats


def test_attribute_splits_concurrent_time_evenly():
    # a: 0-10, b: 5-15 (overlap 5-10 shared), c: 20-25; busy = 20
    per, busy = prof._attribute([(0, 10, "a"), (5, 15, "b"), (20, 25, "c")])
    assert busy == 20
    assert per["a"] == pytest.approx(7.5) and per["b"] == pytest.approx(7.5) and per["c"] == pytest.approx(5)
    # two events of one name at once count twice for that name
    per, busy = prof._attribute([(0, 10, "x"), (0, 10, "x")])
    assert busy == 10 and per["x"] == pytest.approx(10)


def test_fault_cost_is_measured():
    us = prof.fault_cost_us(mb=8, repeats=2)
    assert 0.01 < us < 100  # microseconds per 4 KiB page, on any machine

"""Subprocess worker for the resume test: trains a small NNX MLP with the shared loop and checkpointer.

``--die-at K`` SIGKILLs the process right after step K (no cleanup, async saves possibly in flight), like a
preempted job. Writes the final params to ``--out`` (npz) and the step it started from to ``--out``.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsafety.train import Checkpointer, OptimizerConfig, make_optimizer, nnx_train_step, run_loop


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(4, 32, rngs=rngs)
        self.l2 = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


def loss_fn(model, batch):
    x, y, noise_key = batch
    # noise drawn from a key carried in the batch: checks that key-derived randomness resumes identically
    pred = model(x + 0.01 * jax.random.normal(noise_key, x.shape))
    return jnp.mean((pred[:, 0] - y) ** 2), {}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--save-every", type=int, required=True)
    p.add_argument("--die-at", type=int, default=-1)
    a = p.parse_args()

    model = MLP(nnx.Rngs(0))
    cfg = OptimizerConfig(name="adamw", lr=1e-2, weight_decay=0.01, schedule="cosine", warmup_steps=5)
    opt = nnx.Optimizer(model, make_optimizer(cfg, total_steps=a.steps), wrt=nnx.Param)
    graphdef, model_state = nnx.split((model, opt))
    step_fn = nnx_train_step(graphdef, loss_fn)

    def train_step(state, batch):
        # the state also carries a typed PRNG key that is split every step
        key, sub = jax.random.split(state["key"])
        new_model_state, metrics = step_fn(state["model"], (*batch, sub))
        return {"model": new_model_state, "key": key}, metrics

    base = jax.random.key(42)

    def batch_fn(step):
        k = jax.random.fold_in(base, step)
        x = jax.random.normal(k, (16, 4))
        return x, jnp.sin(x.sum(-1))

    started = {}

    def on_log(step, metrics):
        started.setdefault("first_logged_step", step)
        if step == a.die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    state = {"model": model_state, "key": jax.random.key(7)}
    ckpt = Checkpointer(a.ckpt, save_every=a.save_every, keep_last=2)
    state, _ = run_loop(
        state, train_step, batch_fn, num_steps=a.steps, checkpointer=ckpt, log_every=1, on_log=on_log
    )
    ckpt.close()
    leaves = jax.tree.leaves(
        jax.tree.map(
            lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x,
            state,
        )
    )
    np.savez(a.out, *[np.asarray(x) for x in leaves])
    with open(a.out + ".json", "w") as f:
        json.dump({"start_step": started.get("first_logged_step", a.steps + 1) - 1}, f)


if __name__ == "__main__":
    main()

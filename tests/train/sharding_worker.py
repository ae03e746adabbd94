"""Runs in a subprocess with 4 fake CPU devices (XLA_FLAGS set by the test): unsharded vs DP vs FSDP training."""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxsafety.models import GPT2, GPT2Config, Llama, LlamaConfig
from jaxsafety.train import OptimizerConfig, make_optimizer, nnx_train_step
from jaxsafety.train.sharding import jit_sharded, make_mesh, shard_batch, shard_state


def loss_fn(model, batch):
    logits = model(batch["tokens"], batch["mask"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], batch["tokens"][:, 1:])
    m = batch["mask"][:, 1:]
    return (ce * m).sum() / m.sum(), {}


def build(arch, optim):
    if arch == "gpt2":
        model = GPT2(
            GPT2Config(vocab_size=256, max_seq_len=32, d_model=64, n_layers=2, n_heads=4), rngs=nnx.Rngs(0)
        )
    else:
        cfg = LlamaConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)
        model = Llama(cfg, rngs=nnx.Rngs(0))
    tx = {
        # a realistic LM learning rate: Adam's g / sqrt(v) amplifies float32 reduction-order noise in near-zero
        # gradients, and the difference scales with the step size
        "adamw": OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.1),
        "sgd": OptimizerConfig(name="sgd", lr=0.5, b1=0.9),
    }[optim]
    opt = nnx.Optimizer(model, make_optimizer(tx), wrt=nnx.Param)
    return nnx.split((model, opt))


def main() -> None:
    assert jax.device_count() == 4, jax.devices()
    out = {}
    for arch, optim in (("gpt2", "adamw"), ("llama", "adamw"), ("llama", "sgd")):
        graphdef, state0 = build(arch, optim)
        step = nnx_train_step(graphdef, loss_fn)
        batches = []
        for i in range(3):
            toks = jax.random.randint(jax.random.key(0), (8, 16), 0, 256)  # same batch: loss must fall
            mask = jnp.ones((8, 16), jnp.int32).at[i, :5].set(0)
            batches.append({"tokens": toks, "mask": mask})
        results = {}
        for mode in ("none", "dp", "fsdp"):
            state = state0
            if mode == "none":
                fn = step
            else:
                mesh = make_mesh(4)
                state = shard_state(state0, mesh, mode)
                fn = jit_sharded(step, state, mesh, mode)
            losses = []
            for b in batches:
                bb = b if mode == "none" else shard_batch(b, make_mesh(4))
                state, metrics = fn(state, bb)
                losses.append(float(metrics["loss"]))
            leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
            results[mode] = (losses, leaves, state)
        base_losses, base_leaves, _ = results["none"]
        entry = {}
        for mode in ("dp", "fsdp"):
            losses, leaves, state = results[mode]
            entry[mode] = {
                "loss_diff": max(abs(a - b) for a, b in zip(losses, base_losses)),
                "param_diff": max(float(np.abs(a - b).max()) for a, b in zip(leaves, base_leaves)),
                "sharded_leaves": sum(
                    1 for x in jax.tree.leaves(state) if any(s is not None for s in x.sharding.spec)
                ),
                "max_shard_fraction": max(
                    x.addressable_shards[0].data.size / x.size
                    for x in jax.tree.leaves(state)
                    if x.size >= 1024
                ),
            }
        entry["losses"] = base_losses
        out[f"{arch}-{optim}"] = entry
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

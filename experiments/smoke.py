"""Smoke experiment: train a tiny Flax NNX MLP on two interleaved spirals, end to end.

Exercises the whole foundation in about a minute on CPU: typed config + CLI, the optimizer factory, a jitted
functional NNX train step, the resumable loop with orbax checkpoints, TensorBoard logging, a results JSON and plots.

    python experiments/smoke.py --smoke                 # ~20 s on 2 CPU cores
    python experiments/smoke.py --num-steps 5000 --optim.name lion --optim.lr 3e-4
    python experiments/smoke.py --run-name my-run       # run again with the same name to resume
    tensorboard --logdir runs
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

from jaxsafety.config import ConfigError, check_range, parse_cli
from jaxsafety.train import OptimizerConfig, make_optimizer, nnx_train_step, run_loop
from jaxsafety.train.experiment import start_run


@dataclasses.dataclass(frozen=True)
class SmokeConfig:
    """Train a tiny MLP on two spirals (the smoke test of the training stack)."""

    run_name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    num_points: int = 4096
    noise: float = 0.15
    hidden: int = 64
    depth: int = 3
    batch_size: int = 256
    num_steps: int = 3000
    log_every: int = 50
    ckpt_every: int = 500
    keep_last: int = 2
    optim: OptimizerConfig = OptimizerConfig(
        name="adamw", lr=1e-2, weight_decay=1e-4, schedule="cosine", warmup_steps=100, grad_clip_norm=1.0
    )

    def __post_init__(self) -> None:
        check_range("num_points", self.num_points, ge=16, integer=True)
        check_range("noise", self.noise, ge=0)
        check_range("hidden", self.hidden, ge=1, integer=True)
        check_range("depth", self.depth, ge=1, le=16, integer=True)
        check_range("batch_size", self.batch_size, ge=1, integer=True)
        check_range("num_steps", self.num_steps, ge=1, integer=True)
        check_range("log_every", self.log_every, ge=1, integer=True)
        check_range("ckpt_every", self.ckpt_every, ge=1, integer=True)
        check_range("keep_last", self.keep_last, ge=1, integer=True)
        try:
            self.optim.resolve(self.num_steps)
        except ConfigError as err:
            raise err.with_prefix("optim") from None


PRESETS = {"smoke": SmokeConfig(num_steps=600, ckpt_every=200, log_every=20)}


def two_spirals(key: jax.Array, n: int, noise: float) -> tuple[jax.Array, jax.Array]:
    """``n`` points ``[n, 2]`` on two interleaved spirals, labels ``[n]`` in {0, 1}."""
    k_t, k_noise = jax.random.split(key)
    half = n // 2
    t = jnp.sqrt(jax.random.uniform(k_t, (half,))) * 3.0 * jnp.pi
    arm = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1) / (3.0 * jnp.pi)
    x = jnp.concatenate([arm, -arm]) + noise * jax.random.normal(k_noise, (2 * half, 2)) / 3.0
    y = jnp.concatenate([jnp.zeros(half, jnp.int32), jnp.ones(half, jnp.int32)])
    return x, y


class MLP(nnx.Module):
    def __init__(self, hidden: int, depth: int, *, rngs: nnx.Rngs):
        dims = [2] + [hidden] * depth
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in itertools.pairwise(dims)])
        self.head = nnx.Linear(hidden, 2, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = nnx.gelu(layer(x))
        return self.head(x)


def loss_fn(model: MLP, batch: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": (logits.argmax(-1) == y).mean()}


def main(cfg: SmokeConfig) -> dict:
    t0 = time.time()
    run = start_run("smoke", cfg, run_name=cfg.run_name, root=cfg.out_dir)
    key_data, key_model, key_test, key_batches = jax.random.split(jax.random.key(cfg.seed), 4)
    x_train, y_train = two_spirals(key_data, cfg.num_points, cfg.noise)
    x_test, y_test = two_spirals(key_test, 2048, cfg.noise)

    model = MLP(cfg.hidden, cfg.depth, rngs=nnx.Rngs(key_model))
    optimizer = nnx.Optimizer(model, make_optimizer(cfg.optim, total_steps=cfg.num_steps), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    step_fn = nnx_train_step(graphdef, loss_fn)

    @jax.jit
    def batch_at(step: jax.Array) -> tuple[jax.Array, jax.Array]:
        # The batch is a pure function of the step, so a resumed run sees the same data.
        idx = jax.random.randint(jax.random.fold_in(key_batches, step), (cfg.batch_size,), 0, cfg.num_points)
        return x_train[idx], y_train[idx]

    @jax.jit
    def evaluate(state: nnx.State) -> dict[str, jax.Array]:
        m, _ = nnx.merge(graphdef, state)
        loss, aux = loss_fn(m, (x_test, y_test))
        return {"loss": loss, **aux}

    history: list[tuple[int, float, float]] = []

    def on_log(step: int, metrics: dict[str, float]) -> None:
        history.append((step, metrics["loss"], metrics["accuracy"]))

    with run, run.checkpointer(cfg.ckpt_every, cfg.keep_last) as ckpt:
        state, last = run_loop(
            state,
            step_fn,
            batch_at,
            num_steps=cfg.num_steps,
            checkpointer=ckpt,
            tracker=run.tracker,
            log_every=cfg.log_every,
            desc="smoke",
            on_log=on_log,
            metadata={"experiment": "smoke"},
        )
        test = {k: float(v) for k, v in evaluate(state).items()}
        run.tracker.scalars(test, cfg.num_steps, prefix="test/")
        params = nnx.state(nnx.merge(graphdef, state)[0], nnx.Param)
        for path, leaf in nnx.to_flat_state(params):
            run.tracker.histogram("params/" + "/".join(map(str, path)), leaf.get_value(), cfg.num_steps)
        run.tracker.hparams(
            {"optim": dataclasses.asdict(cfg.optim), "hidden": cfg.hidden, "depth": cfg.depth},
            {"hparam/test_accuracy": test["accuracy"]},
        )
        _plot(run, graphdef, state, x_test, y_test, history, cfg.num_steps)
        results = {
            "experiment": "smoke",
            "run": run.name,
            "num_steps": cfg.num_steps,
            "train_loss": last.get("loss"),
            "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "checkpoint_steps": ckpt.all_steps(),
            "backend": jax.default_backend(),
        }
        print(f"[smoke] test accuracy {test['accuracy']:.3f}  loss {test['loss']:.4f}", flush=True)
        run.finish(results, t0)
    return results


def _plot(run, graphdef, state, x_test, y_test, history, step) -> None:
    model, _ = nnx.merge(graphdef, state)
    g = np.linspace(-1.3, 1.3, 200)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), jnp.float32)
    prob = np.asarray(jax.nn.softmax(model(grid))[:, 1]).reshape(200, 200)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    axes[0].contourf(g, g, prob, levels=20, cmap="RdBu_r", alpha=0.7)
    xs, ys = np.asarray(x_test), np.asarray(y_test)
    axes[0].scatter(xs[:, 0], xs[:, 1], c=ys, s=3, cmap="RdBu_r", edgecolors="none")
    axes[0].set_title("decision boundary (test points)")
    axes[0].set_aspect("equal")
    if history:
        h = np.asarray(history)
        axes[1].plot(h[:, 0], h[:, 1], label="train loss")
        axes[1].plot(h[:, 0], h[:, 2], label="train accuracy")
        axes[1].set_xlabel("step")
        axes[1].legend()
        axes[1].set_title("learning curve")
    fig.tight_layout()
    run.save_figure(fig, "smoke", step)
    plt.close(fig)


if __name__ == "__main__":
    main(parse_cli(SmokeConfig, sys.argv[1:], presets=PRESETS))
    sys.exit(0)

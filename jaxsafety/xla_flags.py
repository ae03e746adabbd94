"""XLA flags that must be in ``XLA_FLAGS`` before JAX starts its backend, set in one place.

XLA:CPU (jaxlib 0.10.2) with its default concurrency-optimised thunk scheduler intermittently deadlocks on
programs that run several batched LAPACK QR factorisations side by side, which is what vmapping an in-graph
orthogonal initialiser over seeds produces (``jax.vmap(make_train(config))``: every call of a 4-seed PPO program
could hang with all threads idle, and a vmapped 3 x (64 x 64) ``orthogonal`` init alone hung in about half of the
processes tried). ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` removed it in every trial; it costs
nothing measurable on the small programs where it matters. Scripts that vmap over seeds call
:func:`apply_cpu_workarounds` before anything touches the backend; the test suite's ``conftest.py`` does too.

Two more failures of small programs (games, tiny networks), whose intra-op threads and YNNPACK fusions buy
nothing, so scripts of such programs turn those off:

- ``single_threaded=True`` (``--xla_cpu_multi_thread_eigen=false``): stopped rare hangs of vmapped PPO runs.
- ``no_ynn=True`` (``--xla_cpu_experimental_ynn_fusion_type=``, an empty list: no YNNPACK fusions): programs with
  nested Jacobians (N-player LOLA on exact game values, vmapped over games and initialisations) segfault inside
  a YNNPACK transpose kernel (``slinky::fuse_contiguous_dims`` under ``YnnFusionThunk``, seen with gdb) when a
  second such program runs; with the flag, never in our trials; ``-dot`` (dots only) does not help.

LM training keeps both (its matmuls need the thread pool and YNNPACK).
"""

from __future__ import annotations

import os

__all__ = [
    "CPU_WORKAROUND_FLAGS",
    "apply_cpu_workarounds",
    "enable_compilation_cache",
    "prefer_fast_compile",
    "with_cpu_workarounds_env",
]

CPU_WORKAROUND_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)
_SINGLE_THREADED = "--xla_cpu_multi_thread_eigen=false"
_NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="


def _wanted(single_threaded: bool, no_ynn: bool) -> tuple[str, ...]:
    extra = ((_SINGLE_THREADED,) if single_threaded else ()) + ((_NO_YNN,) if no_ynn else ())
    return CPU_WORKAROUND_FLAGS + extra


def apply_cpu_workarounds(single_threaded: bool = False, no_ynn: bool = False) -> bool:
    """Append :data:`CPU_WORKAROUND_FLAGS` (and the small-program flags chosen, see the module docstring) to
    ``XLA_FLAGS`` (those not already there, nor set otherwise).

    Returns True if the flags are in effect: already present, or added before the backend started. Returns
    False (and changes nothing) when the backend is already running without them; a caller that needs them
    must then run its work in a fresh process (e.g. with :func:`with_cpu_workarounds_env`).
    """
    return _append_flags(_wanted(single_threaded, no_ynn))


def prefer_fast_compile() -> bool:
    """Ask XLA for its cheapest backend optimisation level (``--xla_backend_optimization_level=0``), for runs
    whose time is mostly compilation (``--smoke`` sizes, tests): compiles several times faster, runs slower;
    results agree with the optimised program only up to float reassociation (last bits). Same contract as :func:`apply_cpu_workarounds`; an explicit level in ``XLA_FLAGS`` wins."""
    return _append_flags(("--xla_backend_optimization_level=0",))


def enable_compilation_cache(
    path: str | os.PathLike | None = None, *, min_compile_time_s: float = 1.0
) -> str:
    """Turn on JAX's persistent compilation cache, so that a CLI or script run again skips XLA compilation of
    its larger programs (the quadrature likelihood fits of :mod:`jaxsafety.scaling` compile for about 20 s on 2
    CPU cores and load from the cache in well under 1 s). ``path``: default ``$JAXSAFETY_CACHE/xla`` (see
    :func:`jaxsafety.io.cache_dir`); only programs that took at least ``min_compile_time_s`` to
    compile are stored. Safe to call at any time (it only sets ``jax.config`` options); returns the directory."""
    import jax

    if path is None:
        from jaxsafety.io import cache_dir

        path = cache_dir() / "xla"
    path = os.fspath(path)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def _flag_names(flags: str) -> set[str]:
    """The names (``--name`` before any ``=``) of the whitespace-separated flags in an ``XLA_FLAGS`` string."""
    return {tok.split("=", 1)[0] for tok in flags.split()}


def _with_flags(flags: str, wanted: tuple[str, ...]) -> tuple[str, list[str]]:
    """``flags`` with each of ``wanted`` whose name it does not set appended (the user's flags stay first and
    win: e.g. ``--xla_cpu_max_isa=AVX2`` or an explicit optimisation level is never replaced nor duplicated)."""
    have = _flag_names(flags)
    missing = [f for f in wanted if f.split("=", 1)[0] not in have]
    return " ".join([flags.strip(), *missing]).strip(), missing


def _append_flags(wanted: tuple[str, ...]) -> bool:
    flags, missing = _with_flags(os.environ.get("XLA_FLAGS", ""), wanted)
    if not missing:
        return True
    if "jax" in __import__("sys").modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return False
    os.environ["XLA_FLAGS"] = flags
    return True


def with_cpu_workarounds_env(
    env: dict[str, str] | None = None, single_threaded: bool = False, no_ynn: bool = False
) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) whose ``XLA_FLAGS`` carry the flags of
    :func:`apply_cpu_workarounds`."""
    env = dict(os.environ if env is None else env)
    env["XLA_FLAGS"] = _with_flags(env.get("XLA_FLAGS", ""), _wanted(single_threaded, no_ynn))[0]
    return env

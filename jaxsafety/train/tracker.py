"""Metrics tracking: one :class:`Tracker` protocol, a TensorBoard backend and a no-op backend.

Event files go to ``runs/<experiment>/<run-name>`` so ``tensorboard --logdir runs`` shows every experiment side by
side. The TensorBoard backend writes through tensorboardX (no TensorFlow needed). Values may be Python numbers,
numpy arrays or JAX arrays; JAX arrays are pulled to the host once.

PureJaxRL-style training returns whole metric histories as arrays from one jitted call; :func:`log_history` writes
such a history (optionally with a leading seed axis) after the run.
"""

from __future__ import annotations

import datetime
import io
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from jaxsafety.config import check_choice
from jaxsafety.distributed import is_main

__all__ = [
    "NoOpTracker",
    "TensorBoardTracker",
    "Tracker",
    "flatten_dict",
    "log_history",
    "make_tracker",
    "run_dir",
]


@runtime_checkable
class Tracker(Protocol):
    """What every metrics backend implements. ``step`` is the x-axis (an int: update, env step, token...)."""

    logdir: Path | None

    def scalar(self, tag: str, value: Any, step: int) -> None: ...

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None: ...

    def histogram(self, tag: str, values: Any, step: int) -> None: ...

    def image(self, tag: str, image: Any, step: int) -> None: ...

    def figure(self, tag: str, figure: Any, step: int) -> None: ...

    def text(self, tag: str, text: str, step: int) -> None: ...

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def flatten_dict(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten_dict(v, key, sep))
        else:
            out[key] = v
    return out


def _to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def _image_hwc(image: Any) -> np.ndarray:
    """HW, HWC (C in 1/3/4) uint8 or float-in-[0,1] -> HWC uint8."""
    img = _to_numpy(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must have shape [H, W] or [H, W, C] with C in (1, 3, 4), got {img.shape}")
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return img


class NoOpTracker:
    """Accepts everything, writes nothing (for tests, sweeps and non-zero hosts)."""

    logdir: Path | None = None

    def scalar(self, tag: str, value: Any, step: int) -> None:
        pass

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        pass

    def histogram(self, tag: str, values: Any, step: int) -> None:
        pass

    def image(self, tag: str, image: Any, step: int) -> None:
        pass

    def figure(self, tag: str, figure: Any, step: int) -> None:
        pass

    def text(self, tag: str, text: str, step: int) -> None:
        pass

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoOpTracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TensorBoardTracker:
    """Writes TensorBoard event files into ``logdir`` (created if missing)."""

    def __init__(self, logdir: str | Path, flush_secs: int = 30):
        from tensorboardX import SummaryWriter

        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(logdir=str(self.logdir), flush_secs=flush_secs)

    def scalar(self, tag: str, value: Any, step: int) -> None:
        self._writer.add_scalar(tag, float(_to_numpy(value)), global_step=int(step))

    def scalars(self, values: Mapping[str, Any], step: int, prefix: str = "") -> None:
        for tag, value in flatten_dict(values, sep="/").items():
            self.scalar(f"{prefix}{tag}", value, step)

    def histogram(self, tag: str, values: Any, step: int) -> None:
        v = _to_numpy(values).astype(np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size:
            self._writer.add_histogram(tag, v, global_step=int(step))

    def image(self, tag: str, image: Any, step: int) -> None:
        self._writer.add_image(tag, _image_hwc(image), global_step=int(step), dataformats="HWC")

    def figure(self, tag: str, figure: Any, step: int) -> None:
        """A matplotlib figure, rendered to PNG then logged as an image."""
        import matplotlib.image as mpimg

        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=80)
        buf.seek(0)
        self.image(tag, mpimg.imread(buf, format="png"), step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._writer.add_text(tag, text, global_step=int(step))

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Record a run's hyperparameters (nested dicts flattened to ``a.b``) and its final metrics.

        Shows in TensorBoard's HPARAMS tab; the metrics are also written as scalars so the tab can display them.
        """
        from tensorboardX.summary import hparams as hparams_summary

        flat = {}
        for k, v in flatten_dict(hparams).items():
            if isinstance(v, bool | int | float | str):
                flat[k] = v
            else:
                flat[k] = str(v)
        metric_vals = {k: float(_to_numpy(v)) for k, v in metrics.items()}
        exp, ssi, sei = hparams_summary(flat, metric_vals)
        fw = self._writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)
        for k, v in metric_vals.items():
            if math.isfinite(v):
                self._writer.add_scalar(k, v)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardTracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")


def make_tracker(
    experiment: str,
    run_name: str | None = None,
    *,
    root: str | Path = "runs",
    backend: str = "tensorboard",
) -> TensorBoardTracker | NoOpTracker:
    """Tracker for ``<root>/<experiment>/<run_name>``; ``run_name`` defaults to a timestamp.

    ``backend`` is ``"tensorboard"`` or ``"none"``. The env var ``JAXSAFETY_TRACKER=none`` forces the no-op backend.
    In a multi-process job (:mod:`jaxsafety.distributed`) only process 0 writes event files: the others get the
    no-op backend.
    """
    backend = os.environ.get("JAXSAFETY_TRACKER", backend)
    check_choice("tracker backend", backend, ("tensorboard", "none"))
    if backend == "none" or not is_main():
        return NoOpTracker()
    run_name = run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return TensorBoardTracker(run_dir(experiment, run_name, root=root))


def run_dir(experiment: str, run_name: str, *, root: str | Path = "runs") -> Path:
    """``<root>/<experiment>/<run_name>``, each name with characters outside ``[A-Za-z0-9_.=+-]`` replaced by
    ``_``: where :func:`make_tracker` writes."""
    return Path(root) / _SAFE.sub("_", experiment) / _SAFE.sub("_", run_name)


def log_history(
    tracker: Tracker,
    metrics: Mapping[str, Any],
    steps: Any | None = None,
    *,
    seed_axis: int | None = None,
    prefix: str = "",
    every: int = 1,
) -> None:
    """Write a metric history ``{name: array[T]}`` (or ``[S, T]`` with ``seed_axis=0``) as scalars.

    ``steps[t]`` is the x value of entry ``t`` (default ``t``). With a seed axis, the seed mean is written as
    ``name`` and the spread as ``name/min``, ``name/max``. Non-finite entries are skipped; ``every`` thins.
    """
    host = {k: _to_numpy(v) for k, v in flatten_dict(metrics, sep="/").items()}
    if not host:
        return
    length = next(iter(host.values())).shape[0 if seed_axis is None else 1 - seed_axis]
    xs = np.arange(length) if steps is None else _to_numpy(steps).reshape(-1)
    if xs.shape[0] != length:
        raise ValueError(f"steps has {xs.shape[0]} entries but the metrics have {length}")
    for name, v in host.items():
        if seed_axis is not None:
            v = np.moveaxis(v, seed_axis, 0).reshape(v.shape[seed_axis], length, -1).mean(-1)
            series = {"": v.mean(0), "/min": v.min(0), "/max": v.max(0)}
        else:
            series = {"": v.reshape(length, -1).mean(-1)}
        for suffix, vals in series.items():
            for t in range(0, length, every):
                if np.isfinite(vals[t]):
                    tracker.scalar(f"{prefix}{name}{suffix}", vals[t], int(xs[t]))

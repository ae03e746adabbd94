"""The run directory every experiment script writes: ``<root>/<experiment>/<run-name>/``.

Layout::

    config.json        the full validated config
    events.out.tfevents.*   TensorBoard logs (``tensorboard --logdir runs``)
    checkpoints/<step>/     orbax checkpoints (the same run name resumes from the newest one that restores;
                            corrupt ones are moved to checkpoints-corrupt/)
    results.json       headline numbers
    *.png              plots of the headline figures

In a multi-process job (``python -m jaxsafety.launch``) every process opens the same run (process 0's name) and
takes part in its checkpoints; only process 0 writes the config, event files, results and figures.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

from jaxsafety.config import config_to_dict
from jaxsafety.distributed import broadcast_from_main, is_main
from jaxsafety.io import save_figure, write_json_atomic
from jaxsafety.train.checkpoint import Checkpointer, CheckpointError
from jaxsafety.train.tracker import make_tracker
from jaxsafety.train.tracker import run_dir as tracker_run_dir

__all__ = ["Run", "start_run"]


@dataclasses.dataclass
class Run:
    """Handles for one experiment run: its directory, tracker and (lazily) checkpointer. ``is_main``: whether
    this process writes the run's files (process 0 of a multi-process job; always in a single process)."""

    experiment: str
    name: str
    dir: Path
    config: Any
    tracker: Any
    is_main: bool = True

    def checkpointer(self, save_every: int, keep_last: int = 3) -> Checkpointer:
        return Checkpointer(self.dir / "checkpoints", save_every=save_every, keep_last=keep_last)

    def save_results(self, results: dict[str, Any], name: str = "results.json") -> Path:
        """Write ``results`` to ``<run dir>/<name>`` atomically (process 0 only); return the path."""
        if self.is_main:
            write_json_atomic(self.dir / name, results)
        return self.dir / name

    def finish(self, results: dict[str, Any], started: float) -> Path:
        """The common end of an experiment's ``main``: add ``wall_seconds`` (since ``started``, a ``time.time()``)
        and the run's ``config`` to ``results``, write ``results.json`` atomically and print the one-line
        ``[experiment] done in N s -> <run dir>``."""
        results["wall_seconds"] = time.time() - started
        results["config"] = config_to_dict(self.config)
        path = self.save_results(results)
        if self.is_main:
            print(f"[{self.experiment}] done in {results['wall_seconds']:.0f} s -> {self.dir}", flush=True)
        return path

    def save_figure(self, fig: Any, name: str, step: int = 0) -> Path:
        """Log a matplotlib figure to TensorBoard, then save it as ``<run dir>/<name>.png`` and close it
        (:func:`jaxsafety.io.save_figure`; process 0 only, other processes just close it)."""
        path = self.dir / f"{name}.png"
        if not self.is_main:
            import matplotlib.pyplot as plt

            plt.close(fig)
            return path
        self.tracker.figure(f"figures/{name}", fig, step)
        return save_figure(fig, path)

    def close(self) -> None:
        self.tracker.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close()
        if isinstance(exc, CheckpointError):
            # a run whose checkpoints none restore: the one-line reason and exit status 1, not a traceback
            raise SystemExit(f"error: {exc} or pass a new --run-name") from None


def start_run(
    experiment: str,
    config: Any,
    *,
    run_name: str | None = None,
    root: str | Path = "runs",
    tracker: str = "tensorboard",
) -> Run:
    """Create (or reopen, for resuming) ``<root>/<experiment>/<run_name>`` and write ``config.json`` there.

    ``run_name`` defaults to a timestamp, i.e. a fresh run; pass an existing name to resume it.
    """
    # every process of a multi-process job opens process 0's run (the clock differs between processes)
    run_name = broadcast_from_main(run_name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    main = is_main()
    trk = make_tracker(experiment, run_name, root=root, backend=tracker)
    run_dir = tracker_run_dir(experiment, run_name, root=root)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = config_to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
    if main:
        write_json_atomic(run_dir / "config.json", cfg)
    trk.text("config", "```\n" + json.dumps(cfg, indent=2, default=str) + "\n```", 0)
    return Run(experiment=experiment, name=run_name, dir=run_dir, config=config, tracker=trk, is_main=main)

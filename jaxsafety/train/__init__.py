"""Training infrastructure shared by every study: optimizers, checkpoints, metrics tracking, progress, loops."""

from jaxsafety.config import ConfigError, check, check_choice, check_range, parse_cli
from jaxsafety.train.checkpoint import Checkpointer
from jaxsafety.train.loop import nnx_train_step, run_loop
from jaxsafety.train.optim import OptimizerConfig, make_optimizer, make_schedule
from jaxsafety.train.progress import progress, progress_enabled
from jaxsafety.train.tracker import NoOpTracker, TensorBoardTracker, Tracker, log_history, make_tracker

__all__ = [
    "Checkpointer",
    "ConfigError",
    "NoOpTracker",
    "OptimizerConfig",
    "TensorBoardTracker",
    "Tracker",
    "check",
    "check_choice",
    "check_range",
    "log_history",
    "make_optimizer",
    "make_schedule",
    "make_tracker",
    "nnx_train_step",
    "parse_cli",
    "progress",
    "progress_enabled",
    "run_loop",
]

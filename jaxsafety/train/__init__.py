"""Training infrastructure shared by every study: optimizers, checkpoints, metrics tracking, progress, loops."""

from jaxsafety.config import ConfigError, check, check_choice, check_range, parse_cli
from jaxsafety.train.checkpoint import Checkpointer, CheckpointError
from jaxsafety.train.finetune import (
    FinetuneConfig,
    FinetuneResult,
    LoRAConfig,
    SFTData,
    finetune,
    sft_rows,
    trainable_filter,
)
from jaxsafety.train.lm import (
    PretrainConfig,
    PretrainResult,
    cross_entropy,
    evaluate_lm,
    make_lm_train_step,
    next_token_loss,
    pretrain,
)
from jaxsafety.train.loop import nnx_train_step, run_loop
from jaxsafety.train.optim import OptimizerConfig, make_optimizer, make_schedule
from jaxsafety.train.pretrained import (
    ArithmeticLM,
    ArithmeticLMConfig,
    PretrainedLM,
    TrainedModel,
    arithmetic_lm,
    pretrained_lm,
    trained_model,
)
from jaxsafety.train.progress import progress, progress_enabled
from jaxsafety.train.tracker import NoOpTracker, TensorBoardTracker, Tracker, log_history, make_tracker

__all__ = [
    "ArithmeticLM",
    "ArithmeticLMConfig",
    "CheckpointError",
    "Checkpointer",
    "ConfigError",
    "FinetuneConfig",
    "FinetuneResult",
    "LoRAConfig",
    "NoOpTracker",
    "OptimizerConfig",
    "PretrainConfig",
    "PretrainResult",
    "PretrainedLM",
    "SFTData",
    "TensorBoardTracker",
    "Tracker",
    "TrainedModel",
    "arithmetic_lm",
    "check",
    "check_choice",
    "check_range",
    "cross_entropy",
    "evaluate_lm",
    "finetune",
    "log_history",
    "make_lm_train_step",
    "make_optimizer",
    "make_schedule",
    "make_tracker",
    "next_token_loss",
    "nnx_train_step",
    "parse_cli",
    "pretrain",
    "pretrained_lm",
    "progress",
    "progress_enabled",
    "run_loop",
    "sft_rows",
    "trainable_filter",
    "trained_model",
]

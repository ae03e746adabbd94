"""Shared test fixtures. Tests run on CPU; progress bars are off."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("JAXSAFETY_PROGRESS", "0")
# Tests are dominated by XLA compile time, not run time: the cheapest backend optimisation level cuts the suite's
# time by about a third (numerics are unchanged; a test that needs optimised code sets its own flags).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# XLA:CPU failure modes seen with vmapped orthogonal inits (PPO over seeds) and nested-Jacobian LOLA programs:
# see jaxsafety.xla_flags. Tests run small programs (single-threaded Eigen also suits `pytest -n auto`).
from jaxsafety.xla_flags import apply_cpu_workarounds

apply_cpu_workarounds(single_threaded=True, no_ynn=True)

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # experiments/ and benchmarks/ are imported from the repo root
    sys.path.insert(0, str(REPO_ROOT))

"""Shared test fixtures. Tests run on CPU; progress bars are off."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("JAXSAFETY_PROGRESS", "0")
from jaxsafety.xla_flags import apply_cpu_workarounds, prefer_fast_compile

# Both calls APPEND to any XLA_FLAGS the user set (a flag the user set is kept, never duplicated), so that e.g.
# `XLA_FLAGS=--xla_cpu_max_isa=AVX2 pytest` runs the suite with another CPU's instruction set (and so another float
# reassociation), which is how the suite is checked against CPUs other than the one at hand.
# Tests are dominated by XLA compile time, not run time: the cheapest backend optimisation level cuts the suite's
# time by about a third (a test that needs optimised code sets its own flags).
prefer_fast_compile()
# XLA:CPU failure modes seen with vmapped orthogonal inits (PPO over seeds) and nested-Jacobian LOLA programs:
# see jaxsafety.xla_flags. Tests run small programs (single-threaded Eigen also suits `pytest -n auto`).
apply_cpu_workarounds(single_threaded=True, no_ynn=True)

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # experiments/ and benchmarks/ are imported from the repo root
    sys.path.insert(0, str(REPO_ROOT))

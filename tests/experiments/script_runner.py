"""Run an experiment script as a user does: a subprocess from the repo root, output captured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_experiment(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """``python experiments/<script> *args`` in the repo root; raises ``TimeoutExpired`` after ``timeout`` s."""
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )

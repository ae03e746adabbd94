"""Run an experiment script as a user does: a subprocess from the repo root, output captured; or, for its
command-line parsing alone, in this process."""

from __future__ import annotations

import contextlib
import io
import runpy
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


def parse_experiment_cli(script: str, *args: str) -> tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``python experiments/<script> *args`` run in this process (runpy, as
    ``__main__``) for arguments that end it while parsing: ``--print-config`` (the config as JSON on stdout,
    status 0) or a bad value (one line on stderr, status 2). Cheaper than a subprocess: the imports are shared."""
    path = REPO / "experiments" / script
    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = [str(path), *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        return code, out.getvalue(), err.getvalue()
    finally:
        sys.argv = argv
    raise AssertionError(f"{script} {' '.join(args)} ran past its command-line parsing")

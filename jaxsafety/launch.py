"""Run any experiment script as a multi-process JAX job.

On one machine (N local processes; on CPU each gets ``K`` forced host devices and the collectives run over
gloo, so the multi-host code path is exercised for real without a cluster)::

    python -m jaxsafety.launch --num-processes 2 experiments/pretrain_lm.py --smoke
    python -m jaxsafety.launch --num-processes 2 --devices-per-process 2 experiments/pretrain_lm.py --sharding fsdp

On a cluster, start one process per host (or per GPU) the usual way and let ``jax.distributed.initialize()``
read the job's coordinator, size and rank from SLURM, Open MPI or the TPU metadata server::

    srun --nodes 4 --ntasks-per-node 1 python -m jaxsafety.launch --cluster experiments/pretrain_lm.py ...
    gcloud compute tpus tpu-vm ssh my-pod --worker=all \\
        --command "python -m jaxsafety.launch --cluster experiments/pretrain_lm.py ..."

The script runs unchanged as ``__main__`` in every process, after :func:`jaxsafety.distributed.initialize`.
Every line a process prints is prefixed with ``[pK]`` (process 0 keeps its progress bar when the launcher's
stderr is a terminal). When a process dies (non-zero exit or a signal) the launcher stops the others and
exits non-zero with one line naming it; the others would otherwise wait on it in their next collective.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import runpy
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from jaxsafety.distributed import (
    COORDINATOR_ENV,
    NUM_PROCESSES_ENV,
    PROCESS_ID_ENV,
    initialize,
    is_initialized,
)

__all__ = ["child_env", "free_port", "launch", "main", "run_script"]

_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_LINE_ENDS = re.compile(rb"(?<=[\n\r])")  # split after every line end


def free_port() -> int:
    """A TCP port free on localhost now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(
    process_id: int,
    num_processes: int,
    coordinator: str,
    *,
    devices_per_process: int = 1,
    platform: str = "cpu",
    progress: bool = False,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of local process ``process_id``: the launcher variables that
    :func:`~jaxsafety.distributed.initialize` reads, and the devices it drives (``cpu``: ``devices_per_process``
    forced host devices, replacing any device count already in ``XLA_FLAGS``; ``gpu``: its own
    ``CUDA_VISIBLE_DEVICES`` slice)."""
    env = dict(os.environ if env is None else env)
    env.update(
        {
            COORDINATOR_ENV: coordinator,
            NUM_PROCESSES_ENV: str(num_processes),
            PROCESS_ID_ENV: str(process_id),
            "PYTHONUNBUFFERED": "1",
            "JAXSAFETY_PROGRESS": "1" if progress else "0",
        }
    )
    if platform == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        flags = [f for f in env.get("XLA_FLAGS", "").split() if f.split("=", 1)[0] != _DEVICE_COUNT_FLAG]
        env["XLA_FLAGS"] = " ".join([*flags, f"{_DEVICE_COUNT_FLAG}={devices_per_process}"])
    else:
        first = process_id * devices_per_process
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + i) for i in range(devices_per_process))
    return env


def _pump(
    stream: IO[bytes], prefix: bytes, out: IO[bytes], lock: threading.Lock, wait_s: float = 0.2
) -> None:
    """Copy ``stream`` to ``out`` with ``prefix`` at the start of every line (after ``\\n`` or ``\\r``, so a
    progress bar redrawn in place keeps its prefix). Whole lines are written at once, so the lines of several
    processes never interleave; a partial line is written when nothing more arrives for ``wait_s``."""
    fd = stream.fileno()
    at_start, pending = True, b""

    def emit(data: bytes) -> None:
        nonlocal at_start
        pieces = []
        for part in _LINE_ENDS.split(data):
            if part:
                pieces += [prefix, part] if at_start else [part]
                at_start = part[-1] in (10, 13)
        with lock:
            out.write(b"".join(pieces))
            out.flush()

    while True:
        if pending and not select.select([fd], [], [], wait_s)[0]:
            emit(pending)  # a partial line that stays partial (a prompt, a bar's first draw)
            pending = b""
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        pending += chunk
        cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
        if cut:
            emit(pending[:cut])
            pending = pending[cut:]
    if pending:
        emit(pending)


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def launch(
    script: str,
    args: Sequence[str] = (),
    *,
    num_processes: int,
    devices_per_process: int = 1,
    platform: str = "cpu",
    port: int | None = None,
    grace_s: float = 1.0,
) -> int:
    """Run ``script args`` in ``num_processes`` local processes (see the module docstring); return the exit
    status: 0 when all succeed, else the first failure's status (1 for a signal), after one line on stderr
    naming the process that failed and stopping the others (SIGTERM, then SIGKILL after ``grace_s``)."""
    if num_processes < 1:
        raise ValueError(f"num_processes={num_processes} is invalid: accepted values are integers >= 1")
    if devices_per_process < 1:
        raise ValueError(
            f"devices_per_process={devices_per_process} is invalid: accepted values are integers >= 1"
        )
    if platform not in ("cpu", "gpu"):
        raise ValueError(f"platform={platform!r} is invalid: accepted values are 'cpu', 'gpu'")
    if not Path(script).is_file():
        raise FileNotFoundError(f"script {script!r} is not a file")
    coordinator = f"127.0.0.1:{port or free_port()}"
    tty = sys.stderr.isatty()
    out, err = sys.stdout.buffer, sys.stderr.buffer
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    cmd = [sys.executable, "-m", "jaxsafety.launch", "--worker", script, *args]
    for pid in range(num_processes):
        env = child_env(
            pid,
            num_processes,
            coordinator,
            devices_per_process=devices_per_process,
            platform=platform,
            progress=tty and pid == 0,
        )
        # each process in its own session: stopping it also stops what it started
        p = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        procs.append(p)
        prefix = f"[p{pid}] ".encode()
        for stream, sink in ((p.stdout, out), (p.stderr, err)):
            t = threading.Thread(target=_pump, args=(stream, prefix, sink, lock), daemon=True)
            t.start()
            pumps.append(t)

    status, failed = 0, None
    try:
        while True:
            codes = [p.poll() for p in procs]
            bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                failed = bad[0]
                status = codes[failed] if codes[failed] > 0 else 1
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        status = 130
    running = [i for i, p in enumerate(procs) if p.poll() is None]
    if status:
        _stop([procs[i] for i in running], grace_s)
    for t in pumps:
        t.join(timeout=2.0)
    if failed is not None:
        names = ", ".join(map(str, running))
        stopped = f"; stopped process{'es' * (len(running) > 1)} {names}" if running else ""
        with lock:
            print(
                f"launch: process {failed} (pid {procs[failed].pid}) {_describe(procs[failed].returncode)}"
                f"{stopped}",
                file=sys.stderr,
                flush=True,
            )
    return status


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        if all(p.poll() is not None for p in procs):
            return


def run_script(script: str, args: Sequence[str], *, cluster: bool = False) -> None:
    """Join the job (:func:`~jaxsafety.distributed.initialize`), then run ``script`` as ``__main__`` with
    ``args`` as its command line, as ``python script args`` would."""
    initialize(cluster=cluster)
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    if not is_initialized():
        runpy.run_path(script, run_name="__main__")
        return
    # in a job, a failing process exits at once: a normal exit would first wait at jax.distributed's shutdown
    # barrier for the other processes, which may never come (they wait for this one in a collective)
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        if stop.code in (None, 0):
            raise
        if not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
        _exit_now(stop.code if isinstance(stop.code, int) else 1)
    except BaseException:
        traceback.print_exc()
        _exit_now(1)


def _exit_now(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jaxsafety.launch",
        description="Run an experiment script in several JAX processes (jax.distributed).",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--num-processes", type=int, help="start this many local processes")
    mode.add_argument(
        "--cluster",
        action="store_true",
        help="this process is one of a cluster job's (SLURM / Open MPI / TPU pod): initialise from its metadata",
    )
    mode.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one process of a local job
    parser.add_argument(
        "--devices-per-process", type=int, default=1, help="devices each local process drives (default 1)"
    )
    parser.add_argument(
        "--platform", default="cpu", choices=("cpu", "gpu"), help="local devices: forced CPU devices or GPUs"
    )
    parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    ns = parser.parse_args(argv)
    if ns.worker or ns.cluster:
        run_script(ns.script, ns.args, cluster=ns.cluster)
        return 0
    try:
        return launch(
            ns.script,
            ns.args,
            num_processes=ns.num_processes,
            devices_per_process=ns.devices_per_process,
            platform=ns.platform,
            port=ns.port,
        )
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark: ``python -m benchmarks [--quick] [--only name,...] [--list] [--out DIR]``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

from benchmarks.harness import RESULTS_DIR, write_result

_NOT_BENCHMARKS = {
    "harness",
    "__main__",
    "uplift_numpy",
    "lm_ppo_trl",
    "influence_kronfluence_peer",
}  # peers run by others


def discover() -> list[str]:
    """Names of modules in this package that define ``run(quick)``."""
    names = []
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name in _NOT_BENCHMARKS or mod.name.startswith("_"):
            continue
        names.append(mod.name)
    return sorted(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes for every benchmark")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    args = parser.parse_args(argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            print(f"error: --only {','.join(unknown)} is invalid: accepted values are {', '.join(names)}")
            return 2
        names = wanted
    failed = []
    for name in names:
        t0 = time.perf_counter()
        print(f"=== {name} ===", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            payload = module.run(args.quick)
            path = write_result(name, {"quick": args.quick, **payload}, args.out)
            print(f"[{name}] {time.perf_counter() - t0:.1f} s -> {path}", flush=True)
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks: each module runs our implementation and the tool a researcher would otherwise use on the same work,
in one process, and writes ``benchmarks/results/<name>.json``. Run them all with ``python -m benchmarks [--quick]``.

A benchmark module defines ``run(quick: bool) -> dict`` (the JSON payload) and is runnable on its own with
``python -m benchmarks.<name> [--quick]``.
"""

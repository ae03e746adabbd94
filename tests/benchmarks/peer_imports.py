"""The top-level packages a peer script imports (peers run in their own virtualenvs, where jax is absent)."""

from __future__ import annotations

import ast
from pathlib import Path


def import_roots(path: str | Path) -> set[str]:
    """Top-level package names of every ``import`` / ``from ... import`` in the file at ``path`` (at any depth)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots

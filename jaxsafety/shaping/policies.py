"""Fixed memory-one policies for the iterated N-player tensor games (:mod:`envs.tensor_game`): tit-for-tat variants
and unconditional cooperators / defectors, as cooperation probabilities over the ``2^N + 1`` egocentric states.

Egocentric state ``s`` (as in the env): bit ``N - 1`` is the player's own last action, bits ``N - 2 .. 0`` the
others' in cyclic order (1 = defect); ``s = 2^N`` is the start of the game.
"""

from __future__ import annotations

import numpy as np

from jaxsafety.config import check, check_range

__all__ = ["always", "other_defectors", "tit_for_tat"]


def other_defectors(n: int) -> np.ndarray:
    """Number of *other* players who defected, per egocentric state ``[2^N]`` (start state excluded)."""
    check_range("n", n, ge=2, integer=True)
    s = np.arange(2**n)
    return np.array([bin(v & (2 ** (n - 1) - 1)).count("1") for v in s])


def tit_for_tat(n: int, max_defectors: int = 0, p: float = 0.999) -> np.ndarray:
    """N-player tit-for-tat ``[2^N + 1]``: cooperate (with probability ``p``) at the start and whenever at most
    ``max_defectors`` of the other players defected last round, else defect (cooperate with ``1 - p``).

    ``max_defectors=0`` is the strict variant (any defection is punished; Axelrod's TFT for N = 2);
    ``max_defectors = (N - 1) // 2`` cooperates when a majority of the others cooperated. ``p < 1`` keeps logits
    finite for the exact learners.
    """
    check_range("max_defectors", max_defectors, ge=0, le=n - 1, integer=True)
    check(0.5 < p <= 1.0, "p", p, "numbers in (0.5, 1]")
    coop = np.where(other_defectors(n) <= max_defectors, p, 1.0 - p)
    return np.append(coop, p)


def always(n: int, cooperate: bool, p: float = 0.999) -> np.ndarray:
    """Unconditional cooperator (``cooperate=True``) or defector ``[2^N + 1]``."""
    check_range("n", n, ge=2, integer=True)
    return np.full(2**n + 1, p if cooperate else 1.0 - p)

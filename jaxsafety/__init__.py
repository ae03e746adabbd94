"""jaxsafety: a JAX-native research codebase for AI-safety research.

Subpackages: ``train`` (optimizers, checkpoints, tracking), ``models`` (Flax NNX model zoo), ``rl`` (PPO, reward
models, RLHF), ``shaping`` (opponent shaping), ``influence`` (EK-FAC), ``scaling`` (scaling-law and pass@k fits),
``judges``, ``uplift``, and more; see README.md for the map.
"""

__version__ = "0.1.0"

"""wmsim: learned Atari simulators for reinforcement learning.

Collect real Atari frames, train world models on them, export the models, and
serve them as batched dream environments. Importing this package is light: it
imports no torch (see ``tests/test_import_hygiene.py``).
"""

__version__ = "0.1.0"

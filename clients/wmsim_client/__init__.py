"""wmsim_client: gymnasium Env and VectorEnv over a dream simulator, local or remote.

It never imports torch (enforced by ``tests/test_import_hygiene.py``), so any RL
library can use dream environments without the training stack.
"""

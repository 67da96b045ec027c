"""The reference agent: a DreamerV3-style actor-critic trained in imagination."""

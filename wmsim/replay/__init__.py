"""Replay on disk: append-only chunked storage, memory-mapped reads, window samplers."""

from wmsim.replay.reader import Replay
from wmsim.replay.samplers import SAMPLERS, DFSSampler, UniformSampler
from wmsim.replay.writer import ReplayWriter

__all__ = ["SAMPLERS", "DFSSampler", "Replay", "ReplayWriter", "UniformSampler"]

"""The arena on the graphs' device: the same dreams as the host arena, bit for bit.

wmsim puts the arena on the device on CUDA; the same code runs on the CPU with its
values in host memory (``arena="device"``), which is how these tests check it here.
"""

import sys

import numpy as np
import onnxruntime as ort
import pytest

from wmsim.bundle import TensorInfo
from wmsim.errors import UserError
from wmsim.runtime import device_arena
from wmsim.runtime.dreams import Dreams
from wmsim.runtime.graphs import Runtime
from wmsim.store import EMBEDDED

DEFAULT = EMBEDDED / "Breakout.wmsim"
ROWS = 6


def pair(capacity=ROWS):
    """A host-arena and a device-arena runtime of the default model, decoding in onnxruntime."""
    return [
        Runtime(DEFAULT, capacity, device="cpu", threads=1, decoder="onnxruntime", arena=arena)
        for arena in ("host", "device")
    ]


def test_resets_steps_of_any_rows_clears_and_frames_equal_the_host_arenas():
    host, device = pair()
    assert (host.arena_place, device.arena_place) == ("host", "cpu")
    rng = np.random.default_rng(0)

    def same(call):
        expected, got = call(host), call(device)
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(g, e)

    same(lambda r: [r.reset(np.arange(ROWS), np.arange(ROWS) * 3)])
    for t in range(24):  # every row (bound straight into the other copy), or some, shuffled
        rows = np.arange(ROWS) if t % 3 else rng.permutation(ROWS)[: rng.integers(1, ROWS)]
        actions, noise = rng.integers(4, size=len(rows)), host.bundle.noise(len(rows), rng)
        same(lambda r, rows=rows, actions=actions, noise=noise: r.step(rows, actions, noise))
        same(lambda r: [r.frames(np.array([0, 2, 5])), r.frames(np.arange(ROWS))])
        same(lambda r: [r.latents_of(np.array([4, 1])), r.latents_of(np.arange(ROWS))])
        if t == 7:  # an autoreset of two rows mid-episode
            same(lambda r: [r.reset(np.array([1, 3]), np.array([9, 10]))])
        if t == 11:  # a row handed to a new user
            device.clear(np.array([2]))
            host.clear(np.array([2]))
            assert not device.latents_of(np.array([2])).any()
    empty = np.zeros(0, np.int64)
    same(lambda r: r.step(empty, empty, host.bundle.noise(0, rng)))


def test_a_step_of_some_rows_leaves_the_others_as_they_were():
    _, device = pair()
    device.reset(np.arange(ROWS), np.arange(ROWS))
    before = {k: v.numpy().copy() for k, v in device.on_device.arena.items()}
    rows = np.array([4, 1])
    device.step(rows, np.array([1, 2]), device.bundle.noise(2, np.random.default_rng(1)))
    untouched = np.setdiff1d(np.arange(ROWS), rows)
    for name, value in device.on_device.arena.items():
        np.testing.assert_array_equal(value.numpy()[untouched], before[name][untouched])
        assert not np.array_equal(value.numpy()[rows], before[name][rows]) or name.endswith("first")


def test_take_and_put_move_whole_rows_of_every_dtype():
    tensors = {"a": TensorInfo((2, 3), "float32"), "b": TensorInfo((), "bool")}
    take, put = device_arena.row_graphs(tensors)
    arena = {"arena.a": np.arange(24, dtype=np.float32).reshape(4, 2, 3),
             "arena.b": np.array([True, False, True, False])}  # fmt: skip
    rows = np.array([3, 0])
    taken = ort.InferenceSession(take).run(None, {**arena, "rows": rows})
    np.testing.assert_array_equal(taken[0], arena["arena.a"][rows])
    np.testing.assert_array_equal(taken[1], arena["arena.b"][rows])
    values = {"values.a": -np.ones((2, 2, 3), np.float32), "values.b": np.array([True, True])}
    out_a, out_b = ort.InferenceSession(put).run(None, {**arena, **values, "rows": rows})
    expected_a, expected_b = arena["arena.a"].copy(), arena["arena.b"].copy()
    expected_a[rows], expected_b[rows] = -1, True
    np.testing.assert_array_equal(out_a, expected_a)
    np.testing.assert_array_equal(out_b, expected_b)


def test_dreams_on_a_device_arena_equal_dreams_on_the_host():
    seeds, steps = [3, 4, 5, 6], 40  # long enough for ends and autoresets in some rows
    out = []
    for arena in ("host", "device"):
        dreams = Dreams(DEFAULT, 4, device="cpu", threads=1, arena=arena)
        rows, rng, record = np.arange(4), np.random.default_rng(0), []
        dreams.reset(rows, seeds)
        for _ in range(steps):
            reward, cont, terminated = dreams.step(rows, rng.integers(4, size=4))
            record += [reward, cont, terminated, dreams.frames(rows), dreams.latents(rows)]
            if terminated.any():
                dreams.reset(rows[terminated])
        out.append(record)
    for expected, got in zip(*out, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_the_arena_is_on_the_host_on_the_cpu_unless_asked_and_names_a_bad_choice():
    assert Runtime(DEFAULT, 2, device="cpu", threads=1, decode=False).arena_place == "host"
    with pytest.raises(ValueError, match="arena must be one of auto, host, device"):
        Runtime(DEFAULT, 2, device="cpu", arena="gpu")


def test_a_device_arena_without_onnx_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(UserError, match=r"needs onnx: pip install 'wmsim\[gpu\]'"):
        Runtime(DEFAULT, 2, device="cpu", threads=1, decode=False, arena="device")

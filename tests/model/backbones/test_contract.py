"""The SequenceBackbone contract, for every registered backbone (ARCHITECTURE.md, "One contract").

A new backbone joins BACKBONES and a tiny config below; every test here then applies unchanged.
"""

import numpy as np
import pytest
import torch

from wmsim.model.backbones import (
    BACKBONES,
    GRUConfig,
    MambaConfig,
    S5Config,
    TransformerConfig,
    make_backbone,
)
from wmsim.model.backbones.base import SequenceBackbone

TINY = {
    "transformer": TransformerConfig(width=32, layers=2, heads=4, ffn=48, window=8, dropout=0.0),
    "gru": GRUConfig(width=32),
    # chunks of 4, so 20-step sequences cross chunk boundaries, with resets inside chunks
    "mamba2": MambaConfig(width=32, layers=2, state=8, heads=4, chunk=4),
    "s5": S5Config(width=32, layers=2, state=16),
}
INPUT = 12


@pytest.fixture(params=sorted(BACKBONES))
def backbone(request):
    torch.manual_seed(0)
    model = make_backbone(TINY[request.param], INPUT, dtype=torch.float64).eval()
    return model


def test_every_registered_backbone_has_a_tiny_config():
    assert set(TINY) == set(BACKBONES)


def random_inputs(batch, length, seed, resets=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, INPUT, generator=g, dtype=torch.float64)
    is_first = torch.rand(batch, length, generator=g) < resets
    return x, is_first


def step_loop(backbone, x, is_first, state):
    outputs = []
    for t in range(x.shape[1]):
        h, state = backbone.step(x[:, t], is_first[:, t], state)
        outputs.append(h)
    return torch.stack(outputs, 1), state


def assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def assert_forms_agree(backbone, x, is_first, state):
    """The parallel form and a loop of the step form give the same outputs and final state."""
    h_parallel, final_parallel = backbone(x, is_first, state)
    h_steps, final_steps = step_loop(backbone, x, is_first, state)
    torch.testing.assert_close(h_parallel, h_steps)
    assert_states_equal(final_parallel, final_steps)


@pytest.mark.parametrize("length", [1, 5, 20])
def test_forward_equals_a_loop_of_step_from_the_initial_state(backbone, length):
    x, is_first = random_inputs(3, length, seed=length)
    assert_forms_agree(backbone, x, is_first, backbone.initial_state(3, dtype=torch.float64))


def test_forward_equals_a_loop_of_step_from_a_carried_state(backbone):
    # a state reached by 13 steps (past a transformer's 8-slot window), then a second chunk
    x0, f0 = random_inputs(4, 13, seed=1)
    _, carried = step_loop(backbone, x0, f0, backbone.initial_state(4, dtype=torch.float64))
    x, is_first = random_inputs(4, 11, seed=2, resets=0.15)
    is_first[0] = False  # one row carries its state through the whole chunk
    assert_forms_agree(backbone, x, is_first, carried)


def test_chunked_forward_equals_one_forward(backbone):
    x, is_first = random_inputs(2, 24, seed=3)
    state = backbone.initial_state(2, dtype=torch.float64)
    whole, final_whole = backbone(x, is_first, state)
    first, middle = backbone(x[:, :10], is_first[:, :10], state)
    second, final_chunks = backbone(x[:, 10:], is_first[:, 10:], middle)
    torch.testing.assert_close(whole, torch.cat([first, second], 1))
    assert_states_equal(final_whole, final_chunks)


def test_nothing_leaks_across_an_episode_start(backbone):
    x, is_first = random_inputs(2, 16, seed=4, resets=0.0)
    is_first[:, 9] = True
    state = backbone.initial_state(2, dtype=torch.float64)
    h, _ = backbone(x, is_first, state)
    # change everything before the start, including the carried state
    x_changed = x.clone()
    x_changed[:, :9] = torch.randn_like(x_changed[:, :9])
    _, other_state = step_loop(backbone, *random_inputs(2, 5, seed=5), state)
    h_changed, _ = backbone(x_changed, is_first, other_state)
    torch.testing.assert_close(h[:, 9:], h_changed[:, 9:])
    assert not torch.allclose(h[:, :9], h_changed[:, :9])  # the inputs did matter before it


def test_rows_reset_independently(backbone):
    x, is_first = random_inputs(2, 12, seed=6, resets=0.0)
    is_first[0, 5] = True  # only row 0 starts a new episode
    state = backbone.initial_state(2, dtype=torch.float64)
    h, _ = backbone(x, is_first, state)
    h_alone, _ = backbone(x[1:], is_first[1:], {k: v[1:] for k, v in state.items()})
    torch.testing.assert_close(h[1:], h_alone)


def test_state_has_the_spec_shapes_whatever_the_length(backbone):
    spec = backbone.state_spec()
    for length in (1, 7, 30):
        x, is_first = random_inputs(3, length, seed=length)
        _, state = backbone(x, is_first, backbone.initial_state(3, dtype=torch.float64))
        assert state.keys() == spec.keys()
        for name, tensor_spec in spec.items():
            assert tuple(state[name].shape) == (3, *tensor_spec.shape), name
            assert (state[name].dtype == tensor_spec.dtype) or tensor_spec.dtype.is_floating_point


def test_step_does_not_modify_its_inputs(backbone):
    x, is_first = random_inputs(2, 6, seed=7)
    _, state = step_loop(backbone, x, is_first, backbone.initial_state(2, dtype=torch.float64))
    before = {k: v.clone() for k, v in state.items()}
    backbone.step(x[:, 0], torch.tensor([True, False]), state)
    assert_states_equal(state, before)


def test_a_backbone_missing_part_of_the_contract_cannot_be_built():
    class NoStep(SequenceBackbone):
        def state_spec(self):
            return {}

        def forward(self, x, is_first, state):
            return x, state

    with pytest.raises(TypeError, match="step"):
        NoStep()


class StepGraph(torch.nn.Module):
    def __init__(self, backbone, names):
        super().__init__()
        self.backbone, self.names = backbone, names

    def forward(self, *inputs):
        x, is_first, *state = inputs
        h, state = self.backbone.step(x, is_first, dict(zip(self.names, state, strict=True)))
        return (h, *(state[k].clone() for k in self.names))


@pytest.mark.slow
def test_onnx_step_equals_torch_step(backbone):
    import onnxruntime

    from wmsim.export.graphs import to_onnx

    backbone = backbone.float()
    x, is_first = random_inputs(3, 9, seed=11)
    x = x.float()
    # a state some steps in, with resets among the rows
    with torch.no_grad():
        _, state = step_loop(backbone, x, is_first, backbone.initial_state(3))
    names = list(state)
    graph = StepGraph(backbone, names)
    onnx = to_onnx(graph, [x[:, 0], is_first[:, 0], *state.values()],
                   ["x", "is_first", *(f"state.{k}" for k in names)],
                   ["y", *(f"next.{k}" for k in names)])  # fmt: skip
    session = onnxruntime.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    # another batch size than the export's, from another state, with a reset in it
    x, is_first = random_inputs(5, 4, seed=12)
    with torch.no_grad():
        _, state = step_loop(backbone, x.float(), is_first, backbone.initial_state(5))
        expected = graph(x[:, -1].float(), torch.tensor([1, 0, 0, 1, 0], dtype=torch.bool),
                         *state.values())  # fmt: skip
    feed = {"x": x[:, -1].float().numpy(), "is_first": np.array([1, 0, 0, 1, 0], bool)}
    feed |= {f"state.{k}": v.numpy() for k, v in state.items()}
    for got, want in zip(session.run(None, feed), expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)

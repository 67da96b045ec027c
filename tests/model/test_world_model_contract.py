"""The world-model contract (wmsim/model/contract.py), checked over every tiny preset's model."""

import ast
from pathlib import Path

import pytest
import torch

from wmsim.model import WorldModel, make_world_model
from wmsim.train.config import PRESETS

ACTIONS = 4
TINY = sorted(name for name in PRESETS if name.startswith("tiny"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=TINY)
def model(request):
    torch.manual_seed(0)
    return make_world_model(PRESETS[request.param].model, ACTIONS)


def test_every_model_implements_the_contract(model):
    assert isinstance(model, WorldModel)
    assert isinstance(model.clips_rewards, bool)
    assert model.backbone_name is None or isinstance(model.backbone_name, str)
    assert isinstance(model.config.life_loss_ends, bool)
    low, high = model.latent_range
    assert low < high


def test_parameter_groups_hold_every_parameter_once_in_module_order(model):
    grouped = [p for group in model.parameter_groups(0.1) for p in group["params"]]
    assert sorted(map(id, grouped)) == sorted(id(p) for p in model.parameters())
    for group in model.parameter_groups(0.1):
        order = {id(p): i for i, p in enumerate(model.parameters())}
        indices = [order[id(p)] for p in group["params"]]
        assert indices == sorted(indices)


def test_observe_step_latent_decode_and_reconstruct_keep_their_shapes(model):
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 64, 64, 3), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, ACTIONS, (2, 2), generator=g)
    is_first = torch.tensor([[True, False, False]] * 2)
    with torch.no_grad():
        state = model.observe(frames, actions, is_first)
        noise = torch.rand((2, *model.noise_shape), generator=g)
        state, reward, cont, latent = model.step(state, torch.tensor([0, 1]), noise)
        assert reward.shape == cont.shape == (2,)
        assert torch.equal(latent, model.latent(state))
        assert model.decode(latent).shape == (2, 64, 64, 3)
        tokens = model.reconstruct(frames[0])
    assert tokens is None or tokens.shape == (3, 64, 64, 3)


def test_the_export_form_dreams_and_draws_as_the_model_does(model):
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (3, 2, 64, 64, 3), generator=g, dtype=torch.uint8)
    actions = torch.randint(0, ACTIONS, (3, 1), generator=g)
    is_first = torch.tensor([[True, False]] * 3)
    model.eval()
    form = model.export_form()
    with torch.no_grad():
        state = model.observe(frames, actions, is_first)
        noise = torch.rand((3, *model.noise_shape), generator=g)
        ours = model.step(state, torch.tensor([0, 1, 2]), noise)
        theirs = form.step(state, torch.tensor([0, 1, 2]), noise)
        for a, b in zip(ours[1:], theirs[1:], strict=True):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(form.decode(ours[3]), model.decode(ours[3]))
    shared = {id(p) for p in model.parameters()} & {id(p) for p in form.parameters()}
    assert form is model or not shared  # a copy never trains the model's own weights


def test_a_one_hot_linear_is_the_linear_on_one_hot_groups():
    from wmsim.model.networks import OneHotLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(4 * 8, 5)
    one_hot = torch.nn.functional.one_hot(torch.randint(0, 8, (6, 4)), 8).float().flatten(1)
    torch.testing.assert_close(OneHotLinear(linear, 4, 8)(one_hot), linear(one_hot))
    with pytest.raises(ValueError, match="4 groups of 9"):
        OneHotLinear(linear, 4, 9)


def probes(folder: Path, root: Path = ROOT) -> list[str]:
    """getattr/hasattr calls on a model or a model config: what the contract replaces."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id in ("getattr", "hasattr") and node.args:
                target = ast.unparse(node.args[0])
                if target.split(".")[-1] in ("model", "world_model") or ".model" in target:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_callers_use_the_contract_instead_of_probing_models():
    folders = [ROOT / "wmsim" / name for name in ("train", "export", "agent")]
    assert [probe for folder in folders for probe in probes(folder)] == []


def test_the_probe_scan_finds_a_probe(tmp_path):
    (tmp_path / "m.py").write_text("x = getattr(model, 'clips_rewards', False)\n")
    assert probes(tmp_path, root=tmp_path) == ["m.py:1: getattr(model, 'clips_rewards', False)"]

"""``wmsim export --check``: the bundle's graphs in onnxruntime against the torch model.

Both sides observe the same real start contexts, then dream a few steps from
the same random actions and noise, each side from its own previous state, and
decode every frame. One row samples its latents and the others take the mode, so
both paths through the step graph are compared. Floating-point outputs must agree
to a tolerance; token ids, flags and positions exactly; frames to within one level
of 255.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from wmsim.bundle import Bundle
from wmsim.errors import UserError
from wmsim.export.graphs import DecodeGraph

RTOL, ATOL = 1e-3, 1e-4


def _compare(where: str, onnx: np.ndarray, reference: torch.Tensor, problems: list[str]) -> None:
    expected = reference.detach().cpu().numpy()
    if onnx.shape != expected.shape or onnx.dtype != expected.dtype:
        problems.append(f"{where}: onnx {onnx.dtype} {onnx.shape}, torch {expected.dtype} "
                        f"{expected.shape}")  # fmt: skip
    elif expected.dtype == np.uint8:
        worst = np.abs(onnx.astype(np.int16) - expected).max(initial=0)
        if worst > 1:
            problems.append(f"{where}: frames differ by up to {worst} levels")
    elif np.issubdtype(expected.dtype, np.floating):
        if not np.allclose(onnx, expected, rtol=RTOL, atol=ATOL):
            worst = float(np.abs(onnx - expected).max())
            problems.append(f"{where}: differs by up to {worst:.3g}")
    elif not np.array_equal(onnx, expected):
        problems.append(f"{where}: {int((onnx != expected).sum())} entries differ")


@torch.no_grad()
def compare_with_torch(
    bundle: Bundle, model: nn.Module, *, steps: int = 3, batch: int = 5, seed: int = 0
) -> list[str]:
    """Every mismatch between the bundle's graphs and ``model`` (CPU, eval), as messages."""
    from wmsim.runtime.graphs import Graphs

    graphs = Graphs(bundle, device="cpu", decoder="onnxruntime")  # the graphs as exported
    rng = np.random.default_rng(seed)
    contexts = bundle.start_contexts()
    rows = rng.integers(len(contexts["frames"]), size=batch)  # a batch unlike the export's
    frames, actions, is_first = (contexts[k][rows] for k in ("frames", "actions", "is_first"))
    actions = rng.integers(len(bundle.actions), size=actions.shape)  # random, not the real ones
    problems: list[str] = []
    state, latent = graphs.observe(frames, actions, is_first)
    ref = model.observe(*(torch.from_numpy(x) for x in (frames, actions, is_first)))
    for k in graphs.state_names:
        _compare(f"observe {k}", state[k], ref[k], problems)
    _compare("observe latent", latent, model.latent(ref), problems)
    for t in range(steps):
        action = rng.integers(len(bundle.actions), size=batch)
        # the last row samples; the others take the mode. A uniform within float rounding of a
        # class boundary may draw either class in onnxruntime and torch (their cumulative sums
        # differ in the last bits): about 1e-4 per draw of REM's 512 codes, so sampling every
        # row of a multi-step check flipped a token in 1 of about 2,700 draws
        noise = bundle.noise(batch)
        noise[-1] = bundle.noise(1, rng)[0]
        state, reward, cont, latent = graphs.step(state, action, noise)
        ref, ref_reward, ref_cont, ref_latent = model.step(
            ref, torch.from_numpy(action), torch.from_numpy(noise)
        )
        for k in graphs.state_names:
            _compare(f"step {t + 1} {k}", state[k], ref[k], problems)
        _compare(f"step {t + 1} reward", reward, ref_reward, problems)
        _compare(f"step {t + 1} continue", cont, ref_cont, problems)
        _compare(f"step {t + 1} latent", latent, ref_latent, problems)
        reference_frames = DecodeGraph(model)(ref_latent)  # decode.onnx: from its export form
        _compare(f"step {t + 1} frame", graphs.decode(latent), reference_frames, problems)
    return problems


def check_against_torch(bundle: Bundle, model: nn.Module) -> None:
    """Raise if the bundle's graphs and ``model`` disagree (see :func:`compare_with_torch`)."""
    problems = compare_with_torch(bundle, model)
    if problems:
        raise UserError(
            f"{bundle.path}: onnxruntime and torch disagree ({'; '.join(problems[:5])}"
            f"{'; ...' if len(problems) > 5 else ''}); please report this with the run"
        )

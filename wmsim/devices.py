"""Where and in what arithmetic a command runs: ``--device`` and ``--precision``."""

from __future__ import annotations

import torch

from wmsim.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` is the current accelerator (CUDA, MPS, ...) if torch sees one, else the CPU."""
    if name == "auto":
        accelerator = (
            torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        )
        return accelerator or torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise UserError(f"unknown device {name!r}: {error}") from None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32.

    CPUs without native bf16 (no AVX512-BF16 or AMX) run autocast slower than
    fp32, so ``auto`` takes it only where the hardware has it.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    return None

"""--device and --precision: names resolve, or the error names the fix."""

import pytest
import torch

from wmsim.devices import autocast_dtype, resolve_device
from wmsim.errors import UserError


def test_a_device_name_resolves_and_a_bad_one_is_named():
    assert resolve_device("cpu") == torch.device("cpu")
    assert isinstance(resolve_device("auto"), torch.device)
    with pytest.raises(UserError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_precision_names_the_autocast_dtype():
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("auto", cpu) in (None, torch.bfloat16)

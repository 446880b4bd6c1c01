"""Tests of the profile model builders in spanlib.imaging."""

import numpy as np
import pytest
import torch

from spanlib.imaging import build_einet, build_span, images_to_variables
from spanlib.profiles import profile

pytestmark = pytest.mark.usefixtures("single_thread")


def parameters_of(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_build_span_repeatable():
    quick = profile("quick")
    first = parameters_of(build_span(quick, build_einet(quick)))
    second = parameters_of(build_span(quick, build_einet(quick)))
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.equal(value, second[name]), name


def test_build_span_seed_changes_encoders():
    quick = profile("quick")
    default = build_span(quick, build_einet(quick))
    other = build_span(quick, build_einet(quick), seed=quick.seed + 1)
    encoder_changed = [not torch.equal(a, b) for a, b in zip(default.encoder_parameters(), other.encoder_parameters())]
    assert any(encoder_changed)
    for a, b in zip(default.einet_parameters(), other.einet_parameters()):
        assert torch.equal(a, b)


def test_build_span_keeps_global_random_state():
    quick = profile("quick")
    einet = build_einet(quick)
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    build_span(quick, einet)
    assert torch.equal(torch.rand(5), expected)


def test_images_to_variables_layout():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    variables = images_to_variables(images)
    assert variables.shape == (2, 20, 3)
    for row in range(4):
        for column in range(5):
            assert torch.equal(variables[:, row * 5 + column, :], images[:, :, row, column])


def test_images_to_variables_rejects_bad_input():
    with pytest.raises(ValueError, match=r"got \(3, 4, 5\); add a batch dim with images.unsqueeze\(0\)"):
        images_to_variables(torch.zeros(3, 4, 5))
    with pytest.raises(TypeError, match="images must be a torch.Tensor, got ndarray"):
        images_to_variables(np.zeros((1, 3, 4, 5)))

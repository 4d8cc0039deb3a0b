"""The torchvision alias basicsr needs lives in one place and works."""

from __future__ import annotations

import importlib
import sys

import torch

from processor.engine import compat


def test_alias_exposes_rgb_to_grayscale_from_torchvision() -> None:
    from torchvision.transforms import functional

    module = compat.install_torchvision_alias()
    assert sys.modules[compat.ALIAS] is module
    assert module.rgb_to_grayscale is functional.rgb_to_grayscale
    image = torch.rand(3, 4, 5)
    assert torch.equal(module.rgb_to_grayscale(image), functional.rgb_to_grayscale(image))


def test_installing_twice_keeps_one_module() -> None:
    assert compat.install_torchvision_alias() is compat.install_torchvision_alias()


def test_basicsr_and_the_architectures_import_through_it() -> None:
    compat.import_ml_stack()
    degradations = importlib.import_module("basicsr.data.degradations")  # the module doing the old import
    assert degradations.rgb_to_grayscale is sys.modules[compat.ALIAS].rgb_to_grayscale

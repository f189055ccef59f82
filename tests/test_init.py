"""Initial weights as the reference draws them where a spec says how (`conv_init: fan_out`: timm's PVT-v2 and
Twins). Both models draw from seeded generators; their draws are compared as distributions, per conv."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import ROOT, factory, ir_of

timm = pytest.importorskip("timm")


@pytest.mark.parametrize("name", ["pvtv2_b0", "twins_svt_s"])
def test_convs_start_as_timms(name: str) -> None:
    """Every conv's weights spread as timm's (N(0, 2 / fan_out), fan_out per group) and its bias is zero."""
    path = ROOT / "specs" / f"{name}.yaml"
    torch.manual_seed(0)
    ref = timm.create_model(ir_of(path).spec.reference.model)
    torch.manual_seed(1)
    ours = factory(path)()
    theirs = {n: m for n, m in ref.named_modules() if isinstance(m, nn.Conv2d)}
    mine = {n: m for n, m in ours.named_modules() if isinstance(m, nn.Conv2d)}
    assert mine.keys() == theirs.keys(), f"{name}: convs {sorted(mine.keys() ^ theirs.keys())[:4]}"
    for key, conv in mine.items():
        fan_out = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups
        n = conv.weight.numel()
        # a sample std of n normal draws has a relative standard error of 1 / sqrt(2n); allow five of them
        expected, tolerance = math.sqrt(2.0 / fan_out), 5 / math.sqrt(2 * n)
        for who, c in (("ours", conv), ("timm's", theirs[key])):
            std = c.weight.std().item()
            assert abs(std / expected - 1) < tolerance, (
                f"{name} {key}: {who} std {std:.4g}, N(0, 2/fan_out) {expected:.4g}"
            )
            assert abs(c.weight.mean().item()) < 5 * expected / math.sqrt(n), f"{name} {key}: {who} mean"
        if conv.bias is not None:
            assert not conv.bias.any(), f"{name} {key}: bias not zero"

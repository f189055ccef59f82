"""Checkpoints trained at one resolution load at another: position tables are resampled as timm does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import LARGE, SPECS, factory, ir_of, resolutions

timm_layers = pytest.importorskip("timm.layers")

CASES = [
    p
    for p in SPECS
    if ir_of(p).spec.pos_embed is not None
    and ir_of(p).spec.pos_embed.kind == "learned"
    and ir_of(p).count(ir_of(p).spec.img_size).params <= LARGE
]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_pos_embed_resampled_like_timm(path: Path) -> None:
    ir = ir_of(path)
    low = ir.spec.img_size
    high = max(r for r in resolutions(path))
    source = factory(path)(img_size=low)
    state = source.state_dict()
    old = state["pos_embed"].clone()
    target = factory(path)(img_size=high).eval()
    target.load_state_dict(state, strict=True)
    at_high = next(w for w in ir.walk(high) if w.kind is ir.spec.pos_embed)
    prefix, grid = at_high.s_in.prefix, [at_high.s_in.h, at_high.s_in.w]
    expected = timm_layers.resample_abs_pos_embed(old, new_size=grid, num_prefix_tokens=prefix)
    assert target.pos_embed.shape == expected.shape
    torch.testing.assert_close(target.pos_embed.detach(), expected, rtol=0, atol=0)
    with torch.no_grad():
        x = torch.randn(1, ir.spec.in_chans, *high)
        assert torch.isfinite(target(x)).all()


GRID_CASES = [p for p in SPECS if ir_of(p).spec.pos_embed is not None and ir_of(p).spec.pos_embed.kind == "learned_2d"]


@pytest.mark.parametrize("path", GRID_CASES[:2], ids=[p.stem for p in GRID_CASES[:2]])
def test_grid_pos_embed_resampled_like_timm(path: Path) -> None:
    ir = ir_of(path)
    low, high = ir.spec.img_size, max(resolutions(path))
    source = factory(path)(img_size=low)
    state = source.state_dict()
    target = factory(path)(img_size=high).eval()
    target.load_state_dict(state, strict=True)
    side = target.pos_embed.shape[1]
    expected = timm_layers.resample_abs_pos_embed_nhwc(state["pos_embed"], new_size=[side, side])
    torch.testing.assert_close(target.pos_embed.detach(), expected, rtol=0, atol=0)
    assert side == next(w for w in ir.walk(high) if w.kind is ir.spec.pos_embed).s_in.h

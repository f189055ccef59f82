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


@pytest.mark.filterwarnings("ignore::UserWarning")  # timm's interpolation warns about its own indexing
@pytest.mark.parametrize("rel_pos_bias", [True, "patches"])
def test_relative_position_table_resampled_like_timm(rel_pos_bias: bool | str, tmp_path: Path) -> None:
    """A checkpoint's relative position table (BEiT; with the class token's 3 rows or without them) loads into a
    model of another grid resampled as timm's resize_rel_pos_bias_table does, and set_grid resamples the same."""
    from conftest import compile_data

    branches = [{"norm": "layernorm", "op": {"kind": "mhsa", "rel_pos_bias": rel_pos_bias}}]
    data = {
        "name": "rel_table", "family": "test", "title": "rel table", "paper": "none", "class_name": "RelTable",
        "img_size": 32, "in_chans": 3, "num_classes": 10, "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 8, "dim": 32},
        "prefix_tokens": {"cls": rel_pos_bias is True},
        "stages": [{"key": "blocks", "depth": 1, "heads": 2, "block": branches}],
        "norm": "layernorm", "head": {"kind": "token" if rel_pos_bias is True else "avg"},
    }  # fmt: skip
    _, _, module = compile_data(data, tmp_path)
    state = module.rel_table(img_size=32).state_dict()
    state["blocks.0.attn.relative_position_bias_table"].normal_()
    old = state["blocks.0.attn.relative_position_bias_table"].clone()  # 7 x 7 offsets of a 4 x 4 grid
    target = module.rel_table(img_size=72)  # a 9 x 9 grid: 17 x 17 offsets
    target.load_state_dict(state, strict=True)
    table = target.blocks[0].attn.relative_position_bias_table.detach()
    expected = timm_layers.resize_rel_pos_bias_table(old, new_window_size=(9, 9), new_bias_shape=table.shape)
    assert table.shape == (17 * 17 + (3 if rel_pos_bias is True else 0), 2)
    torch.testing.assert_close(table, expected, rtol=0, atol=0)
    source = module.rel_table(img_size=32)
    source.load_state_dict(state, strict=True)
    source.blocks[0].attn.set_grid((9, 9))
    torch.testing.assert_close(source.blocks[0].attn.relative_position_bias_table.detach(), expected, rtol=0, atol=0)
    assert source.blocks[0].attn.relative_position_index.shape == target.blocks[0].attn.relative_position_index.shape

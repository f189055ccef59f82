"""Position tables and prefix tokens against re-derivations written from their papers (NumPy, no torch
code of ours): MAE's and big_vision's 2-D sin-cos tables, the original Transformer's 1-D table, and the
DINOv2 layout where registers join after a table that covers the class token and the patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_close_to_scale, factory, randomised

SINCOS = ROOT / "specs" / "vit_b16_sincos.yaml"
HYBRIDS = ROOT / "tests" / "hybrids"


def mae_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """MAE's get_1d_sincos_pos_embed_from_grid: [sin(pos w), cos(pos w)], w_i = 1 / 10000^(i / (dim / 2))."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d(dim: int, side: int, cls_token: bool) -> np.ndarray:
    """MAE's get_2d_sincos_pos_embed: meshgrid(w, h) puts the column index first, so the first half of the
    channels encodes x (the column) and the second half y (the row); a zero row for the class token."""
    grid = np.stack(np.meshgrid(np.arange(side, dtype=np.float32), np.arange(side, dtype=np.float32)), axis=0)
    emb = np.concatenate([mae_1d(dim // 2, grid[0]), mae_1d(dim // 2, grid[1])], axis=1)
    return np.concatenate([np.zeros([1, dim]), emb], axis=0) if cls_token else emb


def big_vision_2d(side: int, width: int) -> np.ndarray:
    """big_vision's posemb_sincos_2d: omega_i = 1 / 10000^(i / (width / 4 - 1)); [sin x, cos x, sin y, cos y]."""
    y, x = np.mgrid[:side, :side]
    omega = 1.0 / 10000 ** (np.arange(width // 4) / (width // 4 - 1))
    y = np.einsum("m,d->md", y.flatten(), omega)
    x = np.einsum("m,d->md", x.flatten(), omega)
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)


def vaswani_1d(length: int, dim: int) -> np.ndarray:
    """PE(p, 2i) = sin(p / 10000^(2i / d)), PE(p, 2i + 1) = cos(p / 10000^(2i / d)), one entry at a time."""
    table = np.zeros((length, dim))
    for p in range(length):
        for i in range(0, dim, 2):
            table[p, i] = np.sin(p / 10000 ** (i / dim))
            if i + 1 < dim:
                table[p, i + 1] = np.cos(p / 10000 ** (i / dim))
    return table


@pytest.mark.parametrize("img_size", [224, 384])
def test_mae_table_equals_mae_rederivation(img_size: int) -> None:
    model = factory(SINCOS)(img_size=img_size)
    expected = torch.from_numpy(mae_2d(768, img_size // 16, cls_token=True)).float()[None]
    assert model.pos_embed.shape == expected.shape
    torch.testing.assert_close(model.pos_embed.detach(), expected, rtol=0, atol=1e-6)
    assert not model.pos_embed.requires_grad, "MAE's table is frozen"
    assert "pos_embed" in model.state_dict() and "pos_embed" not in model.no_weight_decay()


def test_mae_checkpoint_loads_and_a_fixed_table_survives_another_resolution() -> None:
    source = factory(SINCOS)()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    factory(SINCOS)().load_state_dict(state, strict=True)
    high = factory(SINCOS)(img_size=384)
    high.load_state_dict(state, strict=True)  # the 224 table is replaced by the 384 one, not interpolated
    expected = torch.from_numpy(mae_2d(768, 24, cls_token=True)).float()[None]
    torch.testing.assert_close(high.pos_embed.detach(), expected, rtol=0, atol=1e-6)


def test_big_vision_table_is_computed_and_not_saved() -> None:
    model = factory(HYBRIDS / "vit_s16_big_vision_gap.yaml")()
    expected = torch.from_numpy(big_vision_2d(14, 384)).float()[None]
    torch.testing.assert_close(model.pos_embed, expected, rtol=0, atol=1e-6)
    assert "pos_embed" not in model.state_dict()
    assert all(p is not model.pos_embed for p in model.parameters())


def test_vaswani_table_covers_every_token_in_sequence_order() -> None:
    model = factory(HYBRIDS / "deit_ti_sincos.yaml")()  # class and distillation tokens, then 196 patches
    expected = torch.from_numpy(vaswani_1d(2 + 196, 192)).float()[None]
    torch.testing.assert_close(model.pos_embed, expected, rtol=0, atol=1e-6)
    assert "pos_embed" not in model.state_dict()


def test_registers_join_after_a_table_over_the_class_token_and_patches() -> None:
    """DINOv2: x = [cls, patches] + pos; then the registers go between the class token and the patches."""
    model = randomised(factory(HYBRIDS / "vit_s16_reg4_dinov2.yaml")())
    assert model.pos_embed.shape == (1, 1 + 196, 384) and model.reg_token.shape == (1, 4, 384)
    img = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        x = model.patch_embed(img)
        x = torch.cat([model.cls_token.expand(2, -1, -1), x], dim=1) + model.pos_embed
        x = torch.cat([x[:, :1], model.reg_token.expand(2, -1, -1), x[:, 1:]], dim=1)
        expected = model.norm(model.blocks(x))
        assert_close_to_scale("dinov2 layout", model.forward_features(img), expected)

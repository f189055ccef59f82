"""The attention-pool (MAP) head with several latent queries, against timm's AttentionPoolLatent."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from timm.layers import AttentionPoolLatent

from conftest import assert_close_to_scale, assert_counts_exact, compile_data, saved_activation_bytes


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_several_latents_equal_timms_pool(pool: str, tmp_path: Path) -> None:
    """Four latent queries on DeiT-Ti's tokens: the pool loads into timm's AttentionPoolLatent(latent_len=4,
    pool_type=...) strictly and gives its output (the first latent's, or their mean); counts exact."""
    head = {"kind": "map", "heads": 3, "latents": 4, "latent_pool": pool}
    data = {"extends": "deit_ti", "name": f"deit_ti_map4_{pool}", "head": head}
    ir, _, module = compile_data(data, tmp_path)
    build = getattr(module, data["name"])
    ours = build().eval()
    theirs = AttentionPoolLatent(192, num_heads=3, mlp_ratio=4.0, latent_len=4, pool_type=pool,
                                 norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)).eval()  # fmt: skip
    with torch.no_grad():
        for p in ours.attn_pool.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    theirs.load_state_dict(ours.attn_pool.state_dict(), strict=True)
    tokens = torch.randn(2, 196, 192)
    with torch.no_grad():
        assert_close_to_scale(f"attn_pool latents=4 {pool}", ours.attn_pool(tokens), theirs(tokens))
    assert ours.attn_pool.latent.shape == (1, 4, 192)
    assert_counts_exact(data["name"], ir, build, 224)
    saved = saved_activation_bytes(build(), torch.float32, False, 2, 224)
    assert ir.memory(224, 2, "float32", False).activation_bytes == saved, f"{data['name']}: activation bytes"

"""The conv embedding (as the stem and as a stage step) and spatial-reduction attention in one small pyramid:
counts and activation bytes equal the instantiated module's, at a size the strides divide and one they do not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import ROOT, assert_counts_exact, compile_data, saved_activation_bytes


def _pyramid(attn: dict, img_size: int) -> dict:
    def blocks(key: str, heads: int) -> dict:
        fine = {"kind": "layernorm", "eps": 1.0e-6}
        branches = [{"norm": fine, "op": dict(attn)}, {"norm": dict(fine), "op": "mlp"}]
        return {"key": key, "depth": 2, "heads": heads, "mlp_ratio": 2.0, "block": branches}

    return {
        "name": "pyramid", "family": "test", "title": "pyramid", "paper": "none", "class_name": "Pyramid",
        "img_size": img_size, "in_chans": 3, "num_classes": 10, "norm_eps": 1.0e-5,
        "stem": {"kind": "conv_embed", "kernel": 7, "stride": 4, "dim": 32, "norm": "layernorm"},
        "stages": [
            blocks("stages.0.blocks", 1),
            {"kind": "conv_embed", "key": "stages.1.downsample", "kernel": 3, "stride": 2, "dim": 64,
             "norm": "layernorm"},
            blocks("stages.1.blocks", 2),
        ],
        "norm": "layernorm",
        "head": {"kind": "avg"},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("attn", "img_size"),
    [({"kind": "sra", "sr_ratio": 2}, 64), ({"kind": "sra", "linear": True, "pool": 3}, 62)],
    ids=["conv-64", "linear-62"],
)
def test_conv_embed_and_sra_count_exactly(attn: dict, img_size: int, tmp_path: Path) -> None:
    ir, text, module = compile_data(_pyramid(attn, img_size), tmp_path)
    assert "self.stages[1].downsample(x.permute(0, 3, 1, 2))" in text
    model = module.pyramid()
    side = (img_size + 3) // 4  # 7x7/4 padded by 3
    out = model.forward_features(torch.randn(1, 3, img_size, img_size))
    assert out.shape == (1, ((side + 1) // 2) ** 2, 64), f"pyramid@{img_size}: {tuple(out.shape)}"
    assert_counts_exact(f"pyramid@{img_size}", ir, module.pyramid, img_size)
    for checkpointing in (False, True):
        got = saved_activation_bytes(model, torch.float32, checkpointing, 2, img_size)
        want = ir.memory(img_size, 2, "float32", checkpointing).activation_bytes
        assert want == got, f"pyramid@{img_size} {attn} checkpointing={checkpointing}: tape {want}, autograd {got}"


def test_stages_that_differ_in_sr_ratio_share_their_classes() -> None:
    """sr_ratio is a runtime option (Op.runtime): PVT-v2's first three stages (ratios 8, 4, 2) build one
    attention class and one block class, each block handed its ratio; the last stage (ratio 1, no reduction)
    keeps its own classes (plain attention without `sr` or `norm`)."""
    text = (ROOT / "generated" / "pvtv2_b0.py").read_text(encoding="utf-8")
    classes = re.findall(r"^class (\w+)\(nn\.Module\)", text, flags=re.M)
    assert classes.count("SpatialReductionAttention") == 1 and "Attention" in classes, classes
    assert len([c for c in classes if "Block" in c]) == 2, classes  # reduced and unreduced
    for ratio in (8, 4, 2):
        assert re.search(rf"GridSRADwConvBlock\([^)]*, {ratio}\) for i", text), f"stage with sr_ratio {ratio}"

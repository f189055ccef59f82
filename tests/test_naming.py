"""Class names in generated files: one class per distinct definition, named for what it is."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from conftest import ROOT, assert_counts_exact, compile_data, source_of


def _classes(text: str) -> list[str]:
    return re.findall(r"^class (\w+)\(", text, flags=re.M)


def test_different_compositions_get_classes_named_for_what_differs(tmp_path: Path) -> None:
    stage = {"depth": 1, "heads": 2, "mlp_ratio": 2.0}
    data = {
        "name": "mixed", "family": "test", "title": "mixed", "paper": "test", "class_name": "Mixed",
        "img_size": 32, "in_chans": 3, "num_classes": 4, "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 8, "dim": 16},
        "prefix_tokens": {"cls": True}, "pos_embed": {"kind": "learned"},
        "stages": [
            {"key": "a", **stage, "block": [{"op": {"kind": "mhsa", "qkv_bias": True}}, {"op": "mlp"}]},
            {"key": "b", **stage, "block": [{"op": {"kind": "mhsa", "qkv_bias": False}}, {"op": "mlp"}],
             "layerscale": {"init": 0.1}},
            {"key": "c", **stage, "block": [{"op": "talking_heads"}, {"op": "mlp"}]},
        ],
        "norm": {"kind": "layernorm"}, "head": {"kind": "token"},
    }  # fmt: skip
    ir, text, module = compile_data(data, tmp_path)
    names = _classes(text)
    for name in ("AttentionQkvBias", "AttentionNoQkvBias", "Block", "LayerScaleBlock", "TalkingHeadsBlock"):
        assert names.count(name) == 1, f"{name} in {names}"
    assert_counts_exact("mixed", ir, module.mixed, 32)
    with torch.no_grad():
        assert module.mixed()(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_a_model_of_one_composition_has_one_plain_block_class() -> None:
    text = source_of(ROOT / "specs" / "deit_s.yaml")
    assert [n for n in _classes(text) if n.endswith("Block")] == ["Block"]
    assert "if " not in text.split("class Block(")[1].split("\n\n\n")[0]  # no option flags in the block


def test_deepvit_s_has_plain_and_reattention_blocks_in_one_container() -> None:
    text = source_of(ROOT / "specs" / "deepvit_s.yaml")
    assert [n for n in _classes(text) if n.endswith("Block")] == ["Block", "ReAttentionBlock"]
    assert "*[Block(396, 12, 1188, dpr[i], attn_drop_rate, proj_drop_rate) for i in range(11)]," in text
    assert "*[ReAttentionBlock(396, 12, 1188, dpr[11 + i], attn_drop_rate, proj_drop_rate) for i in range(5)]," in text

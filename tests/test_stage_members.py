"""Stage keys ``layers.1.blocks``: a ModuleList entry holding named members (a hierarchical model's stage with
its downsample and its blocks, timm's Swin and PVT-v2 layout)."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import assert_counts_exact, compile_data


def _two_stages() -> dict:
    def blocks(key: str, heads: int) -> dict:
        branches = [{"norm": "layernorm", "op": "mhsa"}, {"norm": "layernorm", "op": "mlp"}]
        return {"key": key, "depth": 2, "heads": heads, "mlp_ratio": 2.0, "block": branches}

    return {
        "name": "two_stages", "family": "test", "title": "two stages", "paper": "none", "class_name": "TwoStages",
        "img_size": 64, "in_chans": 3, "num_classes": 10, "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 8, "dim": 32},
        "stages": [
            blocks("layers.0.blocks", 2),
            {"kind": "conv_downsample", "key": "layers.1.downsample", "dim": 64, "stride": 2},
            blocks("layers.1.blocks", 4),
        ],
        "norm": "layernorm",
        "head": {"kind": "avg"},
    }  # fmt: skip


def test_members_share_their_entry_in_state_dict_features_and_counts(tmp_path: Path) -> None:
    ir, _, module = compile_data(_two_stages(), tmp_path)
    model = module.two_stages().eval()
    keys = list(model.state_dict())
    assert "layers.1.downsample.proj.weight" in keys and "layers.1.blocks.1.mlp.fc2.bias" in keys
    assert len(model.layers) == 2 and sorted(model.layers[1]) == ["blocks", "downsample"]
    assert [f["module"] for f in model.feature_info] == ["layers.0", "layers.1"]
    feats = model.forward_intermediates(torch.randn(1, 3, 64, 64), intermediates_only=True)
    assert [tuple(f.shape) for f in feats] == [(1, 32, 8, 8), (1, 64, 4, 4)]
    assert_counts_exact("two_stages", ir, module.two_stages, 64)
    model.prune_intermediate_layers(indices=[0])
    assert len(model.layers) == 1

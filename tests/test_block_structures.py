"""Block structures against timm's blocks, option by option: the flat fused attention + MLP op (timm's
ParallelScalingBlock) and res-post-norm (timm's ResPostBlock; EVA-02-CLIP-E's EvaBlockPostNorm). Each small
model loads the timm model's state_dict strictly, gives its eval outputs, and is counted exactly (params, MACs,
what autograd saves in float32, under bf16 autocast, with checkpointing)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import timm
import torch
from timm.models.vision_transformer import ParallelScalingBlock, ResPostBlock

from conftest import assert_close_to_scale, assert_counts_exact, compile_data, randomised, saved_activation_bytes


def _spec(name: str, block: list[dict], norm: str, **stage: object) -> dict:
    return {
        "name": name,
        "family": "test",
        "title": name,
        "paper": "block structure test",
        "class_name": "Net",
        "img_size": 32,
        "in_chans": 3,
        "num_classes": 5,
        "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 8, "dim": 32},
        "prefix_tokens": {"cls": True},
        "pos_embed": {"kind": "learned", "covers": "all"},
        "stages": [{"key": "blocks", "depth": 2, "heads": 4, "mlp_ratio": 3.0, "block": block, **stage}],
        "norm": norm,
        "head": {"kind": "token"},
    }


def _exact(label: str, data: dict, ref: torch.nn.Module, tmp_path: Path, img: int = 32) -> None:
    ir, _, module = compile_data(data, tmp_path)
    build = getattr(module, data["name"])
    ours = build().eval()
    ref = randomised(ref.eval())
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, img, img)
    with torch.no_grad():
        assert_close_to_scale(label, ours(x), ref(x))
    assert_counts_exact(label, ir, build, img)
    for amp, autocast in ((None, None), ("bf16", torch.bfloat16)):
        for ckpt in (False, True):
            saved = saved_activation_bytes(ours, torch.float32, ckpt, 2, img, autocast=autocast)
            analytic = ir.memory(img, 2, "float32", ckpt, amp=amp).activation_bytes
            assert analytic == saved, f"{label} amp={amp} checkpointing={ckpt}: {analytic:,} != saved {saved:,}"


FUSED = [
    {},
    {"qkv_bias": True},
    {"qk_norm": "same"},
    {"proj_bias": False, "fuse_out_proj": True},
    {"qkv_bias": True, "fuse_out_proj": True, "qk_norm": "same"},
    *({"act": act} for act in ("gelu_tanh", "quick_gelu", "silu", "relu")),
]


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("layerscale", [False, True])
@pytest.mark.parametrize("options", FUSED, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "defaults")
def test_fused_attn_mlp_equals_timm_parallel_scaling_block(
    options: dict, layerscale: bool, norm: str, tmp_path: Path
) -> None:
    op = {"kind": "fused_attn_mlp", **options}
    if op.get("qk_norm") == "same":
        op["qk_norm"] = norm  # timm's qk_norm uses the block's norm layer
    branch = {"norm": norm, "op": op, "keys": {"norm": "in_norm", "layerscale": "ls"}}
    stage = {"layerscale": {"init": 1.0e-5}} if layerscale else {}
    data = _spec("fused", [branch], norm, **stage)
    block = functools.partial(ParallelScalingBlock, fuse_out_proj=options.get("fuse_out_proj", False))
    ref = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=4,
        mlp_ratio=3.0,
        num_classes=5,
        block_fn=block,
        qkv_bias=options.get("qkv_bias", False),
        qk_norm="qk_norm" in options,
        proj_bias=options.get("proj_bias", True),
        act_layer=options.get("act", "gelu"),  # timm takes our activation names
        norm_layer="rmsnorm" if norm == "rmsnorm" else None,
        init_values=1.0e-5 if layerscale else None,
    )
    _exact(f"fused_attn_mlp {options} layerscale={layerscale} {norm}", data, ref, tmp_path)


def test_res_post_norm_equals_timm_res_post_block(tmp_path: Path) -> None:
    """Res-post-norm (Swin-v2): no pre-norm, the branch output normed before the residual sum (`out_norm`)."""
    block = [
        {"norm": "none", "op": {"kind": "mhsa", "qkv_bias": False}, "out_norm": "layernorm"},
        {"norm": "none", "op": "mlp", "out_norm": "layernorm"},
    ]
    data = _spec("respost", block, "layernorm")
    ref = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=4,
        mlp_ratio=3.0,
        num_classes=5,
        qkv_bias=False,
        block_fn=ResPostBlock,
    )
    _exact("res-post-norm", data, ref, tmp_path)


def test_eva02_clip_e_post_norm_equals_timm_eva_block_post_norm(tmp_path: Path) -> None:
    """EVA-02-CLIP-E's residual post-norm (timm's EvaBlockPostNorm, `use_post_norm`), on a narrow two-block
    child of the spec: EVA's fused qkv with q/v bias, a GELU MLP, norms after the ops."""
    data = {
        "extends": "eva02_e14_clip",
        "name": "eva02_e_narrow",
        "img_size": 28,
        "stem": {"dim": 64},
        "stages": {"blocks": {"depth": 2, "heads": 4}},
    }
    ref = timm.create_model(
        "eva02_enormous_patch14_clip_224", pretrained=False, img_size=28, embed_dim=64, depth=2, num_heads=4
    )
    _exact("eva02_e14_clip post-norm", data, ref, tmp_path, img=28)

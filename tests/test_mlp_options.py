"""The `mlp` op's options, each value on its own: analytic params and MACs equal the module's, the traced
activation bytes equal what autograd saves, the block's MLP equals timm's `Mlp` built with the same options
(strict load, eval outputs), and the generated class holds only what the option asks for."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import assert_close_to_scale, assert_counts_exact, compile_data, randomised, saved_activation_bytes

timm_layers = pytest.importorskip("timm.layers")

DIM, HIDDEN, IMG = 16, 24, 32

# (option mapping, timm Mlp keyword arguments for the same MLP)
ACTS = {
    "gelu": nn.GELU,
    "gelu_tanh": functools.partial(nn.GELU, approximate="tanh"),
    "quick_gelu": timm_layers.QuickGELU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
}
CASES: dict[str, tuple[dict, dict]] = {
    **{f"act_{name}": ({"act": name}, {"act_layer": act}) for name, act in ACTS.items()},
    "no_bias": ({"bias": False}, {"bias": False}),
    "norm_layernorm": ({"norm": "layernorm"}, {"norm_layer": functools.partial(nn.LayerNorm, eps=1e-6)}),
    "norm_layernorm_eps": (
        {"norm": {"kind": "layernorm", "eps": 1e-5}},
        {"norm_layer": functools.partial(nn.LayerNorm, eps=1e-5)},
    ),
    "norm_rmsnorm": ({"norm": "rmsnorm"}, {"norm_layer": functools.partial(nn.RMSNorm, eps=1e-6)}),
    "norm_no_affine": (
        {"norm": {"kind": "layernorm", "affine": False}},
        {"norm_layer": functools.partial(nn.LayerNorm, eps=1e-6, elementwise_affine=False)},
    ),
    "all_at_once": (
        {"act": "quick_gelu", "bias": False, "norm": {"kind": "layernorm", "bias": False}},
        {
            "act_layer": timm_layers.QuickGELU,
            "bias": False,
            "norm_layer": functools.partial(nn.LayerNorm, eps=1e-6, bias=False),
        },
    ),
}


def _data(name: str, options: dict) -> dict:
    return {
        "name": name,
        "family": "test",
        "title": name,
        "paper": "mlp options test",
        "class_name": "Net",
        "img_size": IMG,
        "in_chans": 3,
        "num_classes": 5,
        "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 8, "dim": DIM},
        "prefix_tokens": {"cls": True},
        "pos_embed": {"kind": "learned"},
        "stages": [
            {
                "key": "blocks",
                "depth": 2,
                "heads": 2,
                "mlp_ratio": HIDDEN / DIM,
                "block": [{"norm": "layernorm", "op": "mhsa"}, {"norm": "layernorm", "op": {"kind": "mlp", **options}}],
            }
        ],
        "norm": "layernorm",
        "head": {"kind": "token"},
    }


@pytest.mark.parametrize("case", CASES)
def test_mlp_option_is_exact(case: str, tmp_path: Path) -> None:
    options, timm_kwargs = CASES[case]
    ir, _, module = compile_data(_data(f"mlp_{case}", options), tmp_path)
    build = getattr(module, f"mlp_{case}")
    assert_counts_exact(f"mlp {case}", ir, build, IMG)

    model = randomised(build())
    for ckpt in (False, True):
        saved = saved_activation_bytes(model, torch.float32, ckpt, 2, IMG)
        analytic = ir.memory(IMG, 2, "float32", ckpt).activation_bytes
        assert analytic == saved, f"mlp {case} checkpointing={ckpt}: analytic {analytic:,} != saved {saved:,}"

    ours = model.eval().blocks[0].mlp
    ref = timm_layers.Mlp(DIM, HIDDEN, **timm_kwargs).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 17, DIM)
    with torch.no_grad():
        assert_close_to_scale(f"mlp {case}", ours(x), ref(x), tol=0)


def test_generated_mlp_shows_only_what_it_uses(tmp_path: Path) -> None:
    _, plain, _ = compile_data(_data("mlp_plain", {}), tmp_path)
    assert "self.act = nn.GELU()" in plain
    assert "bias=False" not in plain and "self.norm = " not in plain.split("class Mlp")[1].split("class ")[0]
    assert "QuickGELU" not in plain

    _, text, _ = compile_data(_data("mlp_used", CASES["all_at_once"][0]), tmp_path)
    mlp = text.split("class Mlp")[1].split("\nclass ")[0]
    assert "self.fc1 = nn.Linear(dim, hidden, bias=False)" in mlp
    assert "self.fc2 = nn.Linear(hidden, dim, bias=False)" in mlp
    assert "self.act = QuickGELU()" in mlp and "class QuickGELU(nn.Module)" in text
    assert "self.norm = nn.LayerNorm(hidden, eps=1e-06, bias=False)" in mlp

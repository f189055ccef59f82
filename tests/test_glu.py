"""The gated feed-forward `glu` in every option, and the tracer's rule for a product of two activations.

Each option set is compiled into a small model (the op in a sequence block with the class token, and on the
class token alone) and its params, MACs and the bytes autograd saves are compared with the module's; the
unpacked and packed layouts are compared with timm's SwiGLU and GluMlp on the same weights.
"""

from __future__ import annotations

import copy
import functools
import itertools
from pathlib import Path

import pytest
import torch
from timm.layers import GluMlp, SwiGLU

from conftest import assert_counts_exact, compile_data, saved_activation_bytes

OPTIONS = [
    {},
    {"act": "gelu"},
    {"act": "gelu_tanh", "packed": True},
    {"act": "quick_gelu", "bias": False},
    {"act": "relu", "norm": "layernorm"},
    {"packed": True, "gate_last": True, "norm": "layernorm", "gate_init": True},
    {"packed": True, "bias": False, "norm": {"kind": "rmsnorm", "eps": 1.0e-5}},
    {"norm": {"kind": "layernorm", "affine": False}, "gate_init": True},
]


def _spec(name: str, glu: dict) -> dict:
    stage = {"depth": 1, "heads": 2, "mlp_ratio": 2.5}
    return {
        "name": name,
        "family": "test",
        "title": name,
        "paper": "test",
        "class_name": "Net",
        "img_size": 32,
        "in_chans": 3,
        "num_classes": 5,
        "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 8, "dim": 24},
        "prefix_tokens": {"cls": True},
        "pos_embed": {"kind": "learned"},
        "stages": [
            {"key": "blocks", **stage, "block": [{"op": "mhsa"}, {"op": copy.deepcopy(glu)}]},
            {
                "key": "cls_blocks",
                **stage,
                "updates": "cls",
                "block": [{"op": "class_attention"}, {"op": copy.deepcopy(glu)}],
            },
        ],
        "norm": "layernorm",
        "head": {"kind": "token"},
    }


@pytest.mark.parametrize("options", [pytest.param(o, id=str(i)) for i, o in enumerate(OPTIONS)])
def test_glu_counts_and_memory_exact(options: dict, tmp_path: Path) -> None:
    data = _spec("glu_case", {"kind": "glu", **options})
    ir, _, module = compile_data(data, tmp_path)
    assert_counts_exact(f"glu {options}", ir, module.glu_case, 32)
    model = module.glu_case()
    for amp, autocast in ((None, None), ("bf16", torch.bfloat16)):
        for ckpt in (False, True):
            saved = saved_activation_bytes(model, torch.float32, ckpt, 2, 32, autocast=autocast)
            analytic = ir.memory(32, 2, "float32", ckpt, amp=amp).activation_bytes
            assert analytic == saved, f"glu {options} amp={amp} ckpt={ckpt}: {analytic:,} != {saved:,}"


@pytest.mark.parametrize(("packed", "gate_last", "norm", "bias"), list(itertools.product([False, True], repeat=4)))
def test_glu_equals_timm(packed: bool, gate_last: bool, norm: bool, bias: bool, tmp_path: Path) -> None:
    if gate_last and not packed:
        pytest.skip("gate_last is an option of the packed layout")
    options = {"packed": packed, "gate_last": gate_last, "bias": bias, "norm": "layernorm" if norm else "none"}
    _, _, module = compile_data(_spec("glu_ref", {"kind": "glu", "gate_init": True, **options}), tmp_path)
    ours = module.glu_ref().blocks[0].mlp
    dim, hidden = 24, 60  # int(24 * 2.5)
    norm_layer = functools.partial(torch.nn.LayerNorm, eps=1e-6) if norm else None
    if packed:
        ref = GluMlp(dim, 2 * hidden, act_layer=torch.nn.SiLU, norm_layer=norm_layer, bias=bias, gate_last=gate_last)
    else:
        ref = SwiGLU(dim, hidden, norm_layer=norm_layer, bias=bias)
    assert list(ours.state_dict()) == list(ref.state_dict()), "keys and their order"
    torch.manual_seed(0)
    ref.load_state_dict({k: torch.randn_like(v) for k, v in ref.state_dict().items()})
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 7, dim)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
    # the reference's init (timm's VisionTransformer calls it): the same tensors set
    ref.init_weights()
    ours.init_weights()
    for name, value in ref.state_dict().items():
        if (value == 1).all():
            assert (ours.state_dict()[name] == 1).all(), name
        elif name.endswith("weight") and value.abs().max() < 1e-4:
            assert ours.state_dict()[name].abs().max() < 1e-4, name
    if packed and bias:
        assert (ours.fc1.bias[hidden:] == 1).all() and (ref.fc1.bias[hidden:] == 1).all()

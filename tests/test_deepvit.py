"""DeepViT: the generated blocks against plain re-derivations from the paper's equations.

No pip package implements DeepViT, so exactness rests on (a) the state_dict layout of the official
zhoudaquan/dvit_repo models, written out below by hand, and (b) re-deriving re-attention, the scaled
block and the conv stem with explicit reshapes and einsums, compared on random weights with
BatchNorm running statistics perturbed.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import pytest
import torch

import conftest as shared
from archgen import specs
from archgen.compiler import IR, resolve
from archgen.errors import SpecError
from conftest import ROOT, assert_close_to_scale, bn_keys, randomised
from plain_ops import batch_norm, conv, gelu, layer_norm

# spec -> (width, depth, first re-attention block, conv stem, transform_scale, scale_adjustment),
# from the official registrations deepvit_patch16_224_re_attn_{16,24,32}b, deepvit_S, deepvit_L
DEEPVIT = {
    "deepvit_16b": (384, 16, 0, False, False, 1.0),
    "deepvit_24b": (384, 24, 0, False, False, 1.0),
    "deepvit_32b": (384, 32, 0, False, False, 1.0),
    "deepvit_s": (396, 16, 11, True, True, 0.5),
    "deepvit_l": (420, 32, 20, True, False, 0.5),
}
HEADS = 12


def ir_of(name: str) -> IR:
    return shared.ir_of(ROOT / "specs" / f"{name}.yaml")


def factory(name: str):
    return shared.factory(ROOT / "specs" / f"{name}.yaml")


# ---------------------------------------------------------------------------------------------------
# state_dict layout of the official models (models/deep_vision_transformer.py, models/layers.py)
# ---------------------------------------------------------------------------------------------------


def official_keys(name: str, img_size: int, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    dim, depth, first, cnn, _, _ = DEEPVIT[name]
    hidden = 3 * dim
    keys = {"cls_token": (1, 1, dim), "pos_embed": (1, (img_size // 16) ** 2 + 1, dim)}
    if cnn:  # PatchEmbed_CNN: conv1, bn1, (relu), conv2, bn2, proj (8x8 on the stride-2 map)
        keys["patch_embed.conv1.weight"] = (64, 3, 7, 7)
        keys |= bn_keys("patch_embed.bn1", 64)
        keys["patch_embed.conv2.weight"] = (64, 64, 3, 3)
        keys |= bn_keys("patch_embed.bn2", 64)
        keys |= {"patch_embed.proj.weight": (dim, 64, 8, 8), "patch_embed.proj.bias": (dim,)}
    else:
        keys |= {"patch_embed.proj.weight": (dim, 3, 16, 16), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}"
        keys |= {f"{b}.norm1.weight": (dim,), f"{b}.norm1.bias": (dim,)}
        if i >= first:  # apply_transform: the head-mixing conv and its BatchNorm come before qkv
            keys |= {f"{b}.attn.reatten_matrix.weight": (HEADS, HEADS, 1, 1), f"{b}.attn.reatten_matrix.bias": (HEADS,)}
            keys |= bn_keys(f"{b}.attn.var_norm", HEADS)
        keys |= {f"{b}.attn.qkv.weight": (3 * dim, dim), f"{b}.attn.qkv.bias": (3 * dim,)}
        keys |= {f"{b}.attn.proj.weight": (dim, dim), f"{b}.attn.proj.bias": (dim,)}
        keys |= {f"{b}.norm2.weight": (dim,), f"{b}.norm2.bias": (dim,)}
        keys |= {f"{b}.mlp.fc1.weight": (hidden, dim), f"{b}.mlp.fc1.bias": (hidden,)}
        keys |= {f"{b}.mlp.fc2.weight": (dim, hidden), f"{b}.mlp.fc2.bias": (dim,)}
    keys |= {"norm.weight": (dim,), "norm.bias": (dim,), "head.weight": (classes, dim), "head.bias": (classes,)}
    return keys


# state_dict sizes of the official models at 224 (dumped from the official code)
OFFICIAL_ENTRIES = {"deepvit_16b": 312, "deepvit_24b": 464, "deepvit_32b": 616, "deepvit_s": 247, "deepvit_l": 488}


@pytest.mark.parametrize("img_size", [224, 384])
@pytest.mark.parametrize("name", list(DEEPVIT))
def test_state_dict_equals_official_layout(name: str, img_size: int) -> None:
    with torch.device("meta"):
        model = factory(name)(img_size=img_size)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = official_keys(name, img_size)
    assert len(expected) == OFFICIAL_ENTRIES[name]
    assert set(ours) == set(expected), f"{name}@{img_size}: {set(ours) ^ set(expected)}"
    assert list(ours) == list(expected), f"{name}@{img_size}: same keys, different order"
    wrong = {k: (ours[k], s) for k, s in expected.items() if ours[k] != s}
    assert not wrong, f"{name}@{img_size}: shapes differ {wrong}"


# ---------------------------------------------------------------------------------------------------
# Plain re-derivations
# ---------------------------------------------------------------------------------------------------


def patches(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Non-overlapping p x p patches, each projected: (B, C, H, W) -> (B, N, dim)."""
    b, c, h, wd = x.shape
    p = w.shape[-1]
    x = x.reshape(b, c, h // p, p, wd // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (wd // p), -1)
    return x @ w.flatten(1).T + bias


def conv_stem(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    x = torch.relu(batch_norm(conv(x, sd["patch_embed.conv1.weight"], 2, 3), sd, "patch_embed.bn1"))
    x = torch.relu(batch_norm(conv(x, sd["patch_embed.conv2.weight"], 1, 1), sd, "patch_embed.bn2"))
    return patches(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"])


def re_attention(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, mix: bool, scaled: bool) -> torch.Tensor:
    """Eq. (3): Norm(Theta^T softmax(Q K^T / sqrt(d))) V, Theta an H x H matrix (plus a bias) applied
    along the head axis at every (i, j), Norm = eval BatchNorm over heads; optionally x d^-1/2."""
    b, n, c = x.shape
    d = c // HEADS
    q, k, v = (x @ sd[f"{p}.qkv.weight"].T + sd[f"{p}.qkv.bias"]).reshape(b, n, 3, HEADS, d).unbind(2)
    a = torch.softmax(torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d), dim=-1)  # (B, H, N, N)
    if mix:
        theta = sd[f"{p}.reatten_matrix.weight"][:, :, 0, 0]  # (H_out, H_in)
        a = torch.einsum("gh,bhij->bgij", theta, a) + sd[f"{p}.reatten_matrix.bias"].view(1, -1, 1, 1)
        a = batch_norm(a, sd, f"{p}.var_norm")
        if scaled:  # transform_scale
            a = a / math.sqrt(d)
    out = torch.einsum("bhij,bjhd->bihd", a, v).reshape(b, n, c)
    return out @ sd[f"{p}.proj.weight"].T + sd[f"{p}.proj.bias"]


def block(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, mix: bool, ts: bool, s: float) -> torch.Tensor:
    """Official block with scale adjustment s: x + attn(LN1(s x)) / s, then x + mlp(LN2(s x)) / s."""
    y = layer_norm(x * s, sd[f"{p}.norm1.weight"], sd[f"{p}.norm1.bias"])
    x = x + re_attention(y, sd, f"{p}.attn", mix, ts) / s
    y = layer_norm(x * s, sd[f"{p}.norm2.weight"], sd[f"{p}.norm2.bias"])
    hidden = gelu(y @ sd[f"{p}.mlp.fc1.weight"].T + sd[f"{p}.mlp.fc1.bias"])
    return x + (hidden @ sd[f"{p}.mlp.fc2.weight"].T + sd[f"{p}.mlp.fc2.bias"]) / s


def deepvit_forward(name: str, img: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    _, depth, first, cnn, ts, s = DEEPVIT[name]
    x = conv_stem(img, sd) if cnn else patches(img, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"])
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd["pos_embed"]
    for i in range(depth):
        x = block(x, sd, f"blocks.{i}", i >= first, ts, s)
    x = layer_norm(x, sd["norm.weight"], sd["norm.bias"])[:, 0]
    return x @ sd["head.weight"].T + sd["head.bias"]


@cache
def small(name: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = randomised(factory(name)(img_size=64))  # 4x4 tokens: the same code at a small size
    return model, {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["deepvit_s", "deepvit_l", "deepvit_16b"])
def test_reattention_equals_rederivation(name: str) -> None:
    model, sd = small(name)
    dim, depth, first, _, ts, _ = DEEPVIT[name]
    x = torch.randn(2, 17, dim)
    with torch.no_grad():
        for i in (first, depth - 1):
            assert_close_to_scale(
                f"{name} blocks.{i}.attn", model.blocks[i].attn(x), re_attention(x, sd, f"blocks.{i}.attn", True, ts)
            )
        if first:  # the blocks before it are plain softmax attention
            assert_close_to_scale(
                f"{name} blocks.0.attn", model.blocks[0].attn(x), re_attention(x, sd, "blocks.0.attn", False, ts)
            )
            assert not hasattr(model.blocks[first - 1].attn, "reatten_matrix")


def test_reattention_is_not_renormalised() -> None:
    """The mixed maps are used as they are: rows do not sum to one (no second softmax)."""
    model, _ = small("deepvit_16b")
    attn = model.blocks[0].attn
    x = torch.randn(1, 17, 384)
    maps = []
    handle = attn.var_norm.register_forward_hook(lambda _m, _a, out: maps.append(out))
    with torch.no_grad():
        attn(x)
    handle.remove()
    assert (maps[0].sum(-1) - 1).abs().max() > 1e-2


@pytest.mark.parametrize("name", ["deepvit_s", "deepvit_16b"])
def test_block_equals_rederivation(name: str) -> None:
    model, sd = small(name)
    dim, depth, first, _, ts, s = DEEPVIT[name]
    x = torch.randn(2, 17, dim)
    with torch.no_grad():
        for i in sorted({0, first, depth - 1}):
            assert_close_to_scale(
                f"{name} blocks.{i}", model.blocks[i](x), block(x, sd, f"blocks.{i}", i >= first, ts, s)
            )


def test_conv_stem_equals_rederivation() -> None:
    model, sd = small("deepvit_s")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close_to_scale("deepvit_s patch_embed", model.patch_embed(x), conv_stem(x, sd))


@pytest.mark.parametrize("name", ["deepvit_s", "deepvit_16b"])
def test_whole_forward_equals_rederivation(name: str) -> None:
    model, sd = small(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close_to_scale(f"{name}@64 logits", model(x), deepvit_forward(name, x, sd))


def test_whole_forward_at_default_resolution() -> None:
    torch.manual_seed(1)
    model = randomised(factory("deepvit_s")())
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_close_to_scale("deepvit_s@224 logits", model(x), deepvit_forward("deepvit_s", x, sd))


def test_reattention_parameters_are_counted_per_flagged_block() -> None:
    """Each re-attention block adds H*H + H (mix) + 2H (BatchNorm affine) = 180 parameters for H = 12."""
    for name, (_, depth, first, _, _, _) in DEEPVIT.items():
        total = ir_of(name).count(224)
        rows = dict(total.walk())
        mixes = [p for p in rows if p.endswith("attn.reatten_matrix")]
        assert len(mixes) == depth - first, name
        assert all(rows[p].params + rows[p.replace("reatten_matrix", "var_norm")].params == 180 for p in mixes)


# ---------------------------------------------------------------------------------------------------
# Spec errors
# ---------------------------------------------------------------------------------------------------
BASE = (ROOT / "specs" / "deepvit_s.yaml").read_text()


def _load(tmp_path: Path, text: str) -> IR:
    path = tmp_path / "deepvit_x.yaml"
    path.write_text(text.replace("name: deepvit_s", "name: deepvit_x"))
    return resolve(specs.load(path))


def test_reattention_needs_heads(tmp_path: Path) -> None:
    text = BASE.replace("    depth: 5\n    heads: 12\n", "    depth: 5\n")
    with pytest.raises(SpecError, match=r"stages\[1\].heads: required by reattention in block\[0\]"):
        _load(tmp_path, text)


def test_a_container_is_continued_by_the_next_stage_only(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"stages\[1\].continues: 'blokcs' is not the stage just before"):
        _load(tmp_path, BASE.replace("continues: blocks", "continues: blokcs"))
    text = BASE.replace("    continues: blocks\n", "    continues: blocks\n    updates: cls\n")
    with pytest.raises(SpecError, match=r"stages\[1\].updates: must equal the continued stage's `updates`"):
        _load(tmp_path, text)

"""CeiT: the generated blocks against plain re-derivations from the paper's equations.

No pip package implements CeiT, so exactness rests on (a) the state_dict layout of the official
coeusguo/ceit `ceit_model.py`, written out below by hand, and (b) re-deriving every new block's
forward with explicit reshapes and einsums (no nn.Conv2d, no LayerNorm module, no SDPA) and comparing
on random weights, with BatchNorm running statistics perturbed so that BN is not the identity.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import conftest as shared
from archgen import specs
from archgen.compiler import IR, resolve
from archgen.emit import emit
from archgen.errors import SpecError
from conftest import ROOT, assert_close_to_scale, assert_counts_exact, bn_keys, randomised
from plain_ops import batch_norm, conv, gelu, layer_norm

# spec -> (width, heads): the official ceit_{tiny,small,base}_patch16_224 registrations
CEIT = {"ceit_t": (192, 3), "ceit_s": (384, 6), "ceit_b": (768, 12)}


def ir_of(name: str) -> IR:
    return shared.ir_of(ROOT / "specs" / f"{name}.yaml")


def factory(name: str):
    return shared.factory(ROOT / "specs" / f"{name}.yaml")


# ---------------------------------------------------------------------------------------------------
# state_dict layout of the official model (ceit_model.py), written out from its module definitions
# ---------------------------------------------------------------------------------------------------


def official_keys(dim: int, img_size: int, depth: int = 12, classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Key -> shape, in the official registration order: CeIT's own parameters, then its children."""
    hidden, patches = 4 * dim, (img_size // 16) ** 2
    keys = {"cls_token": (1, 1, dim), "pos_embed": (1, patches + 1, dim), "pos_layer_embed": (1, depth, dim)}
    keys["i2t.backbone.conv.weight"] = (64, 3, 7, 7)
    keys |= bn_keys("i2t.backbone.bn", 64)
    keys |= {"i2t.proj.weight": (dim, 64, 4, 4), "i2t.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}"
        for norm in ("norm2", "norm1"):  # Block declares norm2 first
            keys |= {f"{b}.{norm}.weight": (dim,), f"{b}.{norm}.bias": (dim,)}
        keys |= {f"{b}.attn.qkv.weight": (3 * dim, dim), f"{b}.attn.qkv.bias": (3 * dim,)}
        keys |= {f"{b}.attn.proj.weight": (dim, dim), f"{b}.attn.proj.bias": (dim,)}
        keys |= {f"{b}.leff.conv1.weight": (hidden, dim, 1, 1), f"{b}.leff.conv1.bias": (hidden,)}
        keys |= {f"{b}.leff.conv2.weight": (hidden, 1, 3, 3), f"{b}.leff.conv2.bias": (hidden,)}
        keys |= {f"{b}.leff.conv3.weight": (dim, hidden, 1, 1), f"{b}.leff.conv3.bias": (dim,)}
        keys |= bn_keys(f"{b}.leff.bn1", hidden) | bn_keys(f"{b}.leff.bn2", hidden) | bn_keys(f"{b}.leff.bn3", dim)
    for norm in ("norm2", "norm1"):
        keys |= {f"lca.{norm}.weight": (dim,), f"lca.{norm}.bias": (dim,)}
    keys |= {"lca.attn.qkv.weight": (3 * dim, dim), "lca.attn.qkv.bias": (3 * dim,)}
    keys |= {"lca.attn.proj.weight": (dim, dim), "lca.attn.proj.bias": (dim,)}
    keys |= {"lca.feedforward.fc1.weight": (hidden, dim), "lca.feedforward.fc1.bias": (hidden,)}
    keys |= {"lca.feedforward.fc2.weight": (dim, hidden), "lca.feedforward.fc2.bias": (dim,)}
    keys |= {"norm.weight": (dim,), "norm.bias": (dim,), "head.weight": (classes, dim), "head.bias": (classes,)}
    return keys


@pytest.mark.parametrize("img_size", [224, 384])
@pytest.mark.parametrize("name", list(CEIT))
def test_state_dict_equals_official_layout(name: str, img_size: int) -> None:
    dim, _ = CEIT[name]
    with torch.device("meta"):
        model = factory(name)(img_size=img_size)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = official_keys(dim, img_size)
    assert len(expected) == 375  # the official models' entry count at every size
    assert set(ours) == set(expected), f"{name}@{img_size}: {set(ours) ^ set(expected)}"
    assert list(ours) == list(expected), f"{name}@{img_size}: same keys, different order"
    wrong = {k: (ours[k], s) for k, s in expected.items() if ours[k] != s}
    assert not wrong, f"{name}@{img_size}: shapes differ {wrong}"


def test_pos_layer_embed_starts_at_zero_and_is_decayed() -> None:
    model = factory("ceit_t")()
    assert torch.count_nonzero(model.pos_layer_embed) == 0  # official: zeros, never trunc_normal'd
    assert model.no_weight_decay() == {"cls_token", "pos_embed"}


# ---------------------------------------------------------------------------------------------------
# Plain re-derivations of each block, from the equations (paper Sec. 3, official code where it differs)
# ---------------------------------------------------------------------------------------------------


def depthwise(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """k x k depthwise conv with 'same' zero padding as a sum of shifted copies."""
    k = w.shape[-1]
    r = k // 2
    h, wd = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r))
    out = torch.zeros_like(x)
    for i in range(k):
        for j in range(k):
            out += padded[:, :, i : i + h, j : j + wd] * w[:, 0, i, j].view(1, -1, 1, 1)
    return out + bias.view(1, -1, 1, 1)


def max_pool_3x3_s2(x: torch.Tensor) -> torch.Tensor:
    padded = F.pad(x, (1, 1, 1, 1), value=-math.inf)
    h, w = (x.shape[-2] - 1) // 2 + 1, (x.shape[-1] - 1) // 2 + 1
    windows = [padded[:, :, i : i + 2 * h : 2, j : j + 2 * w : 2] for i in range(3) for j in range(3)]
    return torch.stack(windows).amax(0)


def i2t(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    """Eq. (I2T): x' = MaxPool(BN(Conv(x))), then 4x4 patches of x' linearly projected to tokens."""
    f = max_pool_3x3_s2(batch_norm(conv(x, sd["i2t.backbone.conv.weight"], 2, 3), sd, "i2t.backbone.bn"))
    b, c, h, w = f.shape
    patches = f.reshape(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 4) * (w // 4), -1)
    return patches @ sd["i2t.proj.weight"].flatten(1).T + sd["i2t.proj.bias"]  # (B, N, dim)


def attention(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, heads: int, queries: slice) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d)) V per head; Q only for the tokens in ``queries``."""
    b, n, c = x.shape
    d = c // heads
    wq, wk, wv = sd[f"{p}.qkv.weight"].chunk(3)
    bq, bk, bv = sd[f"{p}.qkv.bias"].chunk(3)
    q = (x[:, queries] @ wq.T + bq).reshape(b, -1, heads, d)
    k = (x @ wk.T + bk).reshape(b, n, heads, d)
    v = (x @ wv.T + bv).reshape(b, n, heads, d)
    a = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d), dim=-1)
    out = torch.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, -1, c)
    return out @ sd[f"{p}.proj.weight"].T + sd[f"{p}.proj.bias"]


def leff(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Eqs. (7)-(11): patch tokens -> grid; 1x1 expand, BN, GELU; depthwise, BN, GELU; 1x1 reduce, BN
    (the official code has no GELU after the last BN); the class token is passed on unchanged. The grid is
    (h, w) where given, else the square the official code finds from the token count."""
    b, n, c = x.shape
    side = math.isqrt(n - 1)
    h, w = grid or (side, side)
    cls, tokens = x[:, :1], x[:, 1:]
    grid_ = tokens.reshape(b, h, w, c)  # token t sits at row t // w, column t % w
    y = torch.einsum("bijc,oc->boij", grid_, sd[f"{p}.conv1.weight"][:, :, 0, 0])
    y = gelu(batch_norm(y + sd[f"{p}.conv1.bias"].view(1, -1, 1, 1), sd, f"{p}.bn1"))
    y = gelu(batch_norm(depthwise(y, sd[f"{p}.conv2.weight"], sd[f"{p}.conv2.bias"]), sd, f"{p}.bn2"))
    y = torch.einsum("bhij,oh->bijo", y, sd[f"{p}.conv3.weight"][:, :, 0, 0]) + sd[f"{p}.conv3.bias"]
    y = batch_norm(y.permute(0, 3, 1, 2), sd, f"{p}.bn3").permute(0, 2, 3, 1)
    return torch.cat([cls, y.reshape(b, h * w, c)], dim=1)


def ceit_block(
    x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, heads: int, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    y = layer_norm(x, sd[f"{p}.norm1.weight"], sd[f"{p}.norm1.bias"])
    x = x + attention(y, sd, f"{p}.attn", heads, slice(None))
    return x + leff(layer_norm(x, sd[f"{p}.norm2.weight"], sd[f"{p}.norm2.bias"]), sd, f"{p}.leff", grid)


def lca(cls_tokens: list[torch.Tensor], sd: dict[str, torch.Tensor], heads: int) -> torch.Tensor:
    """LCA: x = [c_1 .. c_L] + E_layer; the last token is the only query and the residual."""
    x = torch.stack(cls_tokens, dim=1) + sd["pos_layer_embed"]
    y = layer_norm(x, sd["lca.norm1.weight"], sd["lca.norm1.bias"])
    x = x[:, -1:] + attention(y, sd, "lca.attn", heads, slice(-1, None))
    z = layer_norm(x, sd["lca.norm2.weight"], sd["lca.norm2.bias"])
    hidden = gelu(z @ sd["lca.feedforward.fc1.weight"].T + sd["lca.feedforward.fc1.bias"])
    return x + hidden @ sd["lca.feedforward.fc2.weight"].T + sd["lca.feedforward.fc2.bias"]


def ceit_forward(
    img: torch.Tensor, sd: dict[str, torch.Tensor], heads: int, depth: int = 12, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    x = i2t(img, sd)
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd["pos_embed"]
    cls_tokens = []
    for i in range(depth):
        x = ceit_block(x, sd, f"blocks.{i}", heads, grid)
        cls_tokens.append(x[:, 0])
    x = layer_norm(lca(cls_tokens, sd, heads), sd["norm.weight"], sd["norm.bias"])[:, 0]
    return x @ sd["head.weight"].T + sd["head.bias"]


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = randomised(factory("ceit_t")(img_size=64))  # 4x4 tokens: the same code at a small size
    return model, {k: v.detach() for k, v in model.state_dict().items()}


def test_i2t_equals_rederivation(tiny: tuple[torch.nn.Module, dict[str, torch.Tensor]]) -> None:
    model, sd = tiny
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close_to_scale("ceit_t i2t", model.i2t(x), i2t(x, sd))


def test_leff_equals_rederivation(tiny: tuple[torch.nn.Module, dict[str, torch.Tensor]]) -> None:
    """LeFF works on the patch grid; the block passes the class token around it (tested below)."""
    model, sd = tiny
    x = torch.randn(2, 1 + 16, 192)
    with torch.no_grad():
        out = model.blocks[3].leff(x[:, 1:].reshape(2, 4, 4, 192))  # row-major grid, (B, H, W, C)
        assert_close_to_scale("ceit_t leff", out.reshape(2, 16, 192), leff(x, sd, "blocks.3.leff")[:, 1:])


def test_block_equals_rederivation(tiny: tuple[torch.nn.Module, dict[str, torch.Tensor]]) -> None:
    model, sd = tiny
    x = torch.randn(2, 1 + 16, 192)
    with torch.no_grad():
        out = model.blocks[5](x)
        assert_close_to_scale("ceit_t block", out, ceit_block(x, sd, "blocks.5", 3))
        # the class token's feed-forward residual is its own normalised value (official behaviour)
        mid = x + model.blocks[5].attn(model.blocks[5].norm1(x))
        assert_close_to_scale("ceit_t block cls", out[:, 0], mid[:, 0] + model.blocks[5].norm2(mid)[:, 0])


def test_lca_equals_rederivation(tiny: tuple[torch.nn.Module, dict[str, torch.Tensor]]) -> None:
    model, sd = tiny
    cls_tokens = [torch.randn(2, 192) for _ in range(12)]
    with torch.no_grad():
        out = model.lca(torch.stack(cls_tokens, dim=1) + model.pos_layer_embed)
        assert tuple(out.shape) == (2, 1, 192)
        assert_close_to_scale("ceit_t lca", out, lca(cls_tokens, sd, 3))


def test_whole_forward_equals_rederivation(tiny: tuple[torch.nn.Module, dict[str, torch.Tensor]]) -> None:
    model, sd = tiny
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert_close_to_scale("ceit_t@64 logits", model(x), ceit_forward(x, sd, heads=3))


def test_whole_forward_at_default_resolution() -> None:
    torch.manual_seed(1)
    model = randomised(factory("ceit_t")())
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_close_to_scale("ceit_t@224 logits", model(x), ceit_forward(x, sd, heads=3))


# ---------------------------------------------------------------------------------------------------
# The CeiT paper's FLOPs: MACs without the attention matmuls; the spec's arithmetic must stay true
# ---------------------------------------------------------------------------------------------------
MATMUL_OPS = ("bmm", "scaled_dot_product")  # q k^T and attn v; linear layers are mm/addmm, convs convolution


def _split_counts(name: str, img_size: int) -> tuple[int, int]:
    """(MACs of convs and linear layers, MACs of attention matmuls) measured by FlopCounterMode."""
    with torch.device("meta"):
        model = factory(name)(img_size=img_size).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, img_size, img_size, device="meta"))
    layers = matmuls = 0
    for op, flops in counter.get_flop_counts()["Global"].items():
        if any(tag in str(op) for tag in MATMUL_OPS):
            matmuls += flops // 2
        else:
            layers += flops // 2
    return layers, matmuls


def _analytic_split(name: str, img_size: int) -> tuple[int, int]:
    total = ir_of(name).count(img_size)
    matmuls = sum(node.macs for path, node in total.walk() if path.endswith("attn_matmuls"))
    return total.macs - matmuls, matmuls


@pytest.mark.parametrize(("name", "img_size"), [("ceit_t", 224), ("ceit_t", 384), ("ceit_s", 224), ("ceit_s", 384)])
def test_paper_convention_is_macs_without_attention_matmuls(name: str, img_size: int) -> None:
    layers, matmuls = _analytic_split(name, img_size)
    assert (layers, matmuls) == _split_counts(name, img_size), f"{name}@{img_size}: split differs from the module"
    dim, _ = CEIT[name]
    tokens = (img_size // 16) ** 2 + 1
    assert matmuls == 12 * 2 * tokens**2 * dim + 2 * 12 * dim  # blocks, then the LCA's single query
    entry = next(p for p in ir_of(name).spec.published if p.quantity == "macs" and p.img_size == (img_size, img_size))
    text = entry.deviation or ""
    numbers = {int(n.replace(",", "")) for n in re.findall(r"\d{1,3}(?:,\d{3})+", text)}
    assert {layers + matmuls, matmuls, layers} <= numbers, f"{name}@{img_size}: deviation text arithmetic is stale"
    if name == "ceit_s" and img_size == 224:
        assert abs(layers - entry.value) > entry.half_ulp, "ceit_s 4.5G became reproducible: update the spec"
    else:
        assert abs(layers - entry.value) <= entry.half_ulp, f"{name}@{img_size}: {layers:,} is not {entry.printed}"


# ---------------------------------------------------------------------------------------------------
# Spec errors: the LCA needs handed-on class tokens; LeFF cannot serve a stage that writes the class
# token alone. LeFF lets every prefix token pass, however many there are.
# ---------------------------------------------------------------------------------------------------
BASE = (ROOT / "specs" / "ceit_t.yaml").read_text()


def _load(tmp_path: Path, text: str) -> IR:
    path = tmp_path / "ceit_x.yaml"
    path.write_text(text.replace("name: ceit_t", "name: ceit_x"))
    return resolve(specs.load(path))


def test_lca_without_collecting_stage_is_a_spec_error(tmp_path: Path) -> None:
    text = "\n".join(line for line in BASE.splitlines() if "collect_cls" not in line)
    with pytest.raises(SpecError, match=r"ceit_x.yaml:\d+:\d+: stages\[1\].kind: lca needs an earlier stage"):
        _load(tmp_path, text)


def test_leff_in_a_class_token_stage_is_a_spec_error(tmp_path: Path) -> None:
    text = BASE.replace("    collect_cls: true", "    updates: cls\n    collect_cls: true")
    line = next(i for i, text_line in enumerate(text.splitlines(), 1) if "op: {kind: leff" in text_line)
    with pytest.raises(SpecError, match=rf"ceit_x.yaml:{line}:\d+: stages\[0\].block\[1\].op.kind: leff changes"):
        _load(tmp_path, text)


def test_leff_passes_every_prefix_token(tmp_path: Path) -> None:
    ir = _load(tmp_path, BASE.replace("prefix_tokens: {cls: true}", "prefix_tokens: {cls: true, dist: true}"))
    (text,) = emit(ir).values()
    namespace: dict = {}
    exec(compile(text, "<ceit_x>", "exec"), namespace)
    block = randomised(namespace["ceit_x"](img_size=64)).blocks[0]
    x = torch.randn(2, 2 + 16, 192)
    with torch.no_grad():
        mid = x + block.attn(block.norm1(x))
        out = block(x)
    assert_close_to_scale("two prefix tokens", out[:, :2], mid[:, :2] + block.norm2(mid)[:, :2])


def test_non_square_model_equals_rederivation() -> None:
    """Built at 64x96 (a 4x6 patch grid), each LeFF block takes the grid it was built for: CeiT's code finds a
    square side from the token count, which a non-square grid does not have. Counts exact at that size too."""
    torch.manual_seed(0)
    build = factory("ceit_t")
    model = randomised(build(img_size=(64, 96)))
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert_close_to_scale("ceit_t@64x96 logits", model(x), ceit_forward(x, sd, heads=3, grid=(4, 6)))
    assert_counts_exact("ceit_t", ir_of("ceit_t"), build, (64, 96))

"""VOLO: outlook attention re-derived from the paper, the token-labeling head, parity at 384, and the
paper's FLOP convention recomputed from our count tree (the numbers the specs' deviations quote)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import ROOT, factory, ir_of, module_of

VOLO = sorted((ROOT / "specs").glob("volo_d*.yaml"))
D1 = ROOT / "specs" / "volo_d1.yaml"


def _spec(name: str) -> Path:
    return ROOT / "specs" / f"{name}.yaml"


def _outlook_by_loops(attn_mod: torch.nn.Module, x: torch.Tensor, heads: int) -> torch.Tensor:
    """VOLO paper, section 3.1, one window at a time: k = 3, padding 1, stride 2.

    For each window centre (i, j) of the stride-2 grid: pool the 2x2 cell of x to one token, predict
    a (k^2 x k^2) weight matrix per head from it (softmax over the inputs), take the k x k values
    around the centre (zero outside the image), mix them, and add the k^2 outputs back at their
    pixels (overlapping windows sum).
    """
    k, p, s = 3, 1, 2
    B, H, W, C = x.shape
    d = C // heads
    v = attn_mod.v(x)  # (B, H, W, C)
    out = torch.zeros_like(v)
    for ci in range(math.ceil(H / s)):
        for cj in range(math.ceil(W / s)):
            cell = x[:, ci * s : ci * s + s, cj * s : cj * s + s]  # the cell clipped to the image
            pooled = cell.mean(dim=(1, 2))  # (B, C)
            a = attn_mod.attn(pooled).reshape(B, heads, k * k, k * k) * d**-0.5
            a = a.softmax(dim=-1)
            pixels = [(ci * s - p + ti, cj * s - p + tj) for ti in range(k) for tj in range(k)]
            window = torch.zeros(B, k * k, C)
            for n, (r, c) in enumerate(pixels):
                if 0 <= r < H and 0 <= c < W:
                    window[:, n] = v[:, r, c]
            window = window.reshape(B, k * k, heads, d)
            mixed = torch.einsum("bhmn,bnhd->bmhd", a, window).reshape(B, k * k, C)
            for m, (r, c) in enumerate(pixels):
                if 0 <= r < H and 0 <= c < W:
                    out[:, r, c] += mixed[:, m]
    return attn_mod.proj(out)


@pytest.mark.parametrize("size", [6, 7, 8])
def test_outlook_attention_matches_the_papers_description(size: int) -> None:
    heads, dim = 2, 16
    attn = module_of(D1).OutlookAttention(dim, heads, 0.0, 0.0).eval()
    with torch.no_grad():
        for prm in attn.parameters():
            prm.normal_(0, 0.5)
        x = torch.randn(2, size, size, dim)
        expected = _outlook_by_loops(attn, x, heads)
        got = attn(x)
    assert got.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-5), f"{size}x{size}: {(got - expected).abs().max():.3g}"


def test_outlook_attention_matches_timm_on_odd_grids() -> None:
    timm_volo = pytest.importorskip("timm.models.volo")
    ref = timm_volo.OutlookAttention(24, 3, kernel_size=3, padding=1, stride=2).eval()
    ours = module_of(D1).OutlookAttention(24, 3, 0.0, 0.0).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 9, 11, 24)
    with torch.no_grad():
        assert torch.allclose(ref(x), ours(x), atol=1e-6)


def test_inference_adds_half_the_max_aux_logit() -> None:
    model = factory(D1)().eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.02)
        x = torch.randn(2, 3, 224, 224)
        f = model.forward_features(x)
        expected = model.head(f[:, 0]) + 0.5 * model.aux_head(f[:, 1:]).max(dim=1)[0]
        assert torch.allclose(model(x), expected)
        assert torch.equal(model.forward_head(f, pre_logits=True), f[:, 0])


def test_position_table_is_added_after_the_downsample_without_a_hidden_branch() -> None:
    source = (ROOT / "generated" / "volo_d1.py").read_text()
    body = source[source.index("def forward_features") :]
    order = [body.index(s) for s in ("self.network[1](x)", "self.pos_embed", "self.network[2]", "self.cls_token")]
    assert order == sorted(order)
    assert "idx" not in source


@pytest.mark.parametrize("path", VOLO, ids=[p.stem for p in VOLO])
def test_state_dict_keys_and_shapes_equal_timm(path: Path) -> None:
    timm = pytest.importorskip("timm")
    spec = ir_of(path).spec
    with torch.device("meta"):
        ref = timm.create_model(spec.reference.model, pretrained=False)
        ours = factory(path)()
    a = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert a == b, f"{path.stem}: {sorted(set(a) ^ set(b))[:5]}"


def test_eval_outputs_equal_timm_volo_d1_384() -> None:
    timm = pytest.importorskip("timm")
    ref = timm.create_model("volo_d1_384", pretrained=False).eval()
    with torch.no_grad():
        for prm in ref.parameters():
            prm.add_(torch.randn_like(prm) * 0.02)
    ours = factory(D1)(img_size=384).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert (a - b).abs().max() <= 1e-5 * max(a.abs().max().item(), 1.0), f"volo_d1@384: {(a - b).abs().max():.3g}"


def _paper_convention(name: str, img_size: int, stem_from: str | None = None) -> int:
    """TokenLabeling's flops() as the VOLO authors used it, from our exact count tree (in MACs).

    Leaves out the downsample, the class-attention blocks and both heads; adds per transformer
    block 10 N^2 heads (softmax, dropout, scale) + (22 C + 9 hidden) N (bias, residual, norm, GELU).
    ``stem_from`` counts the stem of another spec instead (D5's stem at D4's 64 channels).
    """
    ir = ir_of(_spec(name))
    parts = {c.name: c.macs for c in ir.count(img_size).children}
    total = sum(parts.values()) - parts["network.1"] - parts["post_network"] - parts["head"] - parts["aux_head"]
    if stem_from is not None:
        other = {c.name: c.macs for c in ir_of(_spec(stem_from)).count(img_size).children}
        total += other["patch_embed"] - parts["patch_embed"]
    for w in ir.walk(img_size):
        if w.kind.kind == "blocks" and w.kind.block[0].op.kind == "mhsa":  # the transformer blocks
            n, c = w.s_in.n, w.s_in.dim
            heads = w.kind.resolve_heads(c)
            total += w.kind.depth * (10 * n * n * heads + (22 * c + 9 * w.kind.hidden(c)) * n)
    return total


def _paper_entry(name: str, img_size: int):
    return next(
        e
        for e in ir_of(_spec(name)).spec.published
        if e.img_size == (img_size, img_size) and e.source.startswith("VOLO") and e.macs
    )


@pytest.mark.parametrize("name", ["volo_d1", "volo_d2", "volo_d3", "volo_d4"])
def test_paper_flops_at_224_are_the_token_labeling_convention(name: str) -> None:
    entry = _paper_entry(name, 224)
    ours = _paper_convention(name, 224)
    assert abs(ours - entry.value) <= entry.half_ulp, f"{name}@224: {ours / 1e9:.3f}G vs printed {entry.printed}"
    assert f"{ours / 1e9:.3f}G" in entry.deviation, f"{name}: the deviation should quote {ours / 1e9:.3f}G"


@pytest.mark.parametrize(
    ("name", "img_size", "stem_from", "rel"),
    [
        ("volo_d1", 384, None, 0.007),
        ("volo_d5", 224, "volo_d4", 0.004),
        ("volo_d5", 448, "volo_d4", 0.003),
        ("volo_d5", 512, "volo_d4", 0.003),
    ],
)
def test_paper_flops_residuals_are_as_the_specs_state(
    name: str, img_size: int, stem_from: str | None, rel: float
) -> None:
    entry = _paper_entry(name, img_size)
    plain = _paper_convention(name, img_size)
    ours = _paper_convention(name, img_size, stem_from)
    assert abs(ours - entry.value) <= rel * entry.value, f"{name}@{img_size}: {ours / 1e9:.3f}G vs {entry.printed}"
    assert f"{plain / 1e9:.3f}G" in entry.deviation, f"{name}@{img_size}: deviation should quote {plain / 1e9:.3f}G"

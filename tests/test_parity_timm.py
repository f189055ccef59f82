"""Every spec whose reference is timm: strict state_dict load and equal eval outputs.

The timm model is randomly initialised and then perturbed so that no two parameters are alike (with
timm's init every LayerNorm is 1/0 and a swapped norm1/norm2 would go unnoticed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from archgen.errors import SpecError
from archgen.geometry import size_text
from conftest import LARGE, SIZE_VARIANTS, SPECS, assert_close_to_scale, factory, ir_of, timm_size_kwargs

timm = pytest.importorskip("timm")

TIMM_SPECS = [p for p in SPECS if (r := ir_of(p).spec.reference) is not None and r.package == "timm"]


def _pair(path: Path, img_size: int | tuple[int, int]) -> tuple[torch.nn.Module, torch.nn.Module]:
    spec = ir_of(path).spec
    # img_size always: a reference may be registered at another resolution than the spec's default
    # (CaiT's xs24/s36/m36 exist only at 384, m48 at 448; the specs default to 224 as the paper does).
    kwargs = {"pretrained": False, "num_classes": spec.num_classes, **timm_size_kwargs(spec.reference.model, img_size)}
    ref = timm.create_model(spec.reference.model, **kwargs).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = factory(path)(img_size=img_size).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


# Above this, building two random CPU copies and running them costs minutes on CI's two cores; such
# specs (ViT-g/G) are compared by state_dict layout on the meta device instead.
HUGE = 700_000_000
# Above this many MACs at the default resolution (a tower fine-tuned at 378 or 896, DINOv2-L at 518) the
# outputs are compared at 224 (or the next size the strides divide): the same modules and weights, only the
# position table is built for fewer patches. The default resolution's layout is compared on meta.
COSTLY = 150_000_000_000


def _same_layout_on_meta(path: Path, img_size: int) -> None:
    spec = ir_of(path).spec
    with torch.device("meta"):
        size = timm_size_kwargs(spec.reference.model, img_size)
        ref = timm.create_model(spec.reference.model, pretrained=False, num_classes=spec.num_classes, **size)
        ours = factory(path)(img_size=img_size)
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs, f"{path.stem}@{img_size}"


def _parity_size(path: Path) -> tuple[int, int]:
    """The default resolution, or for a costly spec 224 or the next size its strides divide."""
    ir = ir_of(path)
    size = ir.spec.img_size
    if ir.count(size).macs <= COSTLY:
        return size
    low = 224
    while True:
        try:
            ir.walk(low)
            return min((low, low), size)
        except SpecError:
            low += 1


@pytest.mark.parametrize("path", TIMM_SPECS, ids=[p.stem for p in TIMM_SPECS])
def test_eval_outputs_equal_timm(path: Path) -> None:
    spec = ir_of(path).spec
    if ir_of(path).count(spec.img_size).params > HUGE:
        _same_layout_on_meta(path, spec.img_size)
        return
    size = _parity_size(path)
    if size != spec.img_size:
        _same_layout_on_meta(path, spec.img_size)
    ref, ours = _pair(path, size)
    batch = 1 if ir_of(path).count(size).params > LARGE else 2
    x = torch.randn(batch, spec.in_chans, *size)
    with torch.no_grad():  # one forward of timm's model (the costly part), its features reused
        features = ref.forward_features(x)
        mine = ours.forward_features(x)
        assert_close_to_scale(f"{path.stem}@{size_text(size)}", ref.forward_head(features), ours(x))
        assert_close_to_scale(f"{path.stem} features", features, mine)
        assert_close_to_scale(
            f"{path.stem} pre_logits",
            ref.forward_head(features, pre_logits=True),
            ours.forward_head(mine, pre_logits=True),
        )


@pytest.mark.parametrize("name", ["deit_b", "deit_b_distilled"])
def test_eval_outputs_equal_timm_at_384(name: str) -> None:
    path = next(p for p in TIMM_SPECS if p.stem == name)
    ref, ours = _pair(path, 384)
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        assert_close_to_scale(f"{name}@384", ref(x), ours(x))


@pytest.mark.parametrize("path", SIZE_VARIANTS, ids=[p.stem for p in SIZE_VARIANTS])
def test_size_variant_matches_timm_on_meta(path: Path) -> None:
    """The other sizes of the later families: keys, shapes, params and MACs equal timm's model, on meta."""
    from torch.utils.flop_counter import FlopCounterMode

    ir = ir_of(path)
    spec = ir.spec
    with torch.device("meta"):
        size = timm_size_kwargs(spec.reference.model, spec.img_size)
        ref = timm.create_model(spec.reference.model, pretrained=False, num_classes=spec.num_classes, **size).eval()
        ours = factory(path)().eval()
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs, f"{path.stem}: keys or shapes differ from {spec.reference.model}: " + ", ".join(
        sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k] != theirs[k]]
    )
    counted = ir.count(spec.img_size)
    actual = sum(p.numel() for p in ref.parameters())
    assert counted.params == actual, f"{path.stem}: analytic params {counted.params:,} != timm's {actual:,}"
    macs = {}
    for label, model in (("timm", ref), ("ours", ours)):
        # grad mode: under no_grad the counter fails on timm's attention pool (a projected, expanded latent)
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, spec.in_chans, *spec.img_size, device="meta"))
        macs[label] = counter.get_total_flops() // 2
    assert counted.macs == macs["timm"] == macs["ours"], f"{path.stem}: MACs analytic {counted.macs:,}, {macs}"

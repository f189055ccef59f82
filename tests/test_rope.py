"""Rotary position embedding against timm beyond the default size: the table itself, inputs of another size
(``dynamic_img_size``: the table recomputed for the new grid) and models built for another resolution (the
cached table of that grid; EVA's ``ref_grid`` scaling)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import SPECS, assert_close_to_scale, factory, ir_of

timm = pytest.importorskip("timm")
SMALL = 40_000_000  # S/16 sizes and the SBB medium (the one with ref_grid under 40M)

CASES = [p for p in SPECS if ir_of(p).spec.rope is not None and ir_of(p).count(ir_of(p).spec.img_size).params <= SMALL]


def _pair(path: Path, **kwargs: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's model with perturbed weights and ours with them loaded, both in eval mode."""
    spec = ir_of(path).spec
    ref = timm.create_model(spec.reference.model, pretrained=False, num_classes=spec.num_classes, **kwargs).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = factory(path)(**kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_cases_cover_both_tables() -> None:
    kinds = {ir_of(p).spec.rope.kind for p in CASES}
    assert kinds == {"axial", "mixed"}, f"rope specs small enough for this file: {[p.stem for p in CASES]}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_table_equals_timms(path: Path) -> None:
    """The table the blocks receive at the default grid, bit for bit."""
    ref, ours = _pair(path)
    theirs = ref.rope.get_embed()
    mine = ours.rope() if ir_of(path).spec.rope.kind == "mixed" else ours.rope.table
    assert mine.shape == theirs.shape, path.stem
    torch.testing.assert_close(mine, theirs, rtol=0, atol=0, msg=lambda m: f"{path.stem}: {m}")


@pytest.mark.slow
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_other_input_size_like_timm(path: Path) -> None:
    """dynamic_img_size: an input of another size gets the table of its grid, as timm computes it (and the
    absolute table, where there is one, resampled)."""
    ref, ours = _pair(path, dynamic_img_size=True)
    size = 10 * ir_of(path).spec.stem.patch_size  # a 10x10 grid
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert_close_to_scale(f"{path.stem}@{size} dynamic", ours(x), ref(x))


@pytest.mark.slow
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_built_for_another_size_like_timm(path: Path) -> None:
    """A model built for another resolution caches that grid's table (with ref_grid, its coordinates scaled
    to the pretraining grid, as EVA's ref_feat_shape)."""
    ref, ours = _pair(path, img_size=320)
    with torch.no_grad():
        x = torch.randn(1, 3, 320, 320)
        assert_close_to_scale(f"{path.stem}@320", ours(x), ref(x))


@pytest.mark.parametrize("stem", ["vit_s16_rope", "vit_s16_rope_mixed"])
def test_rotation_costs_no_macs(stem: str) -> None:
    """The rotary table and the rotation are elementwise: RoPE-ViT-S counts the MACs of ViT-S/16 (the same
    network with a learned table), and FlopCounterMode agrees (tests/test_counts.py checks every spec)."""
    rope, plain = (next(p for p in SPECS if p.stem == s) for s in (stem, "vit_s16"))
    assert ir_of(rope).count(224).macs == ir_of(plain).count(224).macs, stem

"""Analytic counts (no torch) against the instantiated module: parameters and FlopCounterMode MACs.

Modules are built on the meta device, where ``F.scaled_dot_product_attention`` is counted (on CPU
tensors its fused kernel is invisible to FlopCounterMode, which would hide the attention matmuls).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from archgen.geometry import size_text
from conftest import ALL, factory, family_smallest, ids, ir_of, non_square, resolutions

# every spec at its resolutions, and the smallest of each family at a non-square one (H, about 1.5 H)
CASES = [(p, r) for p in ALL for r in resolutions(p)]
CASES += [(p, size) for p in family_smallest() if (size := non_square(p)) is not None]
CASE_IDS = [f"{p.stem}@{size_text(r)}" for p, r in CASES]


def _meta_model(path: Path, img_size: tuple[int, int]) -> torch.nn.Module:
    with torch.device("meta"):
        return factory(path)(img_size=img_size).eval()


@pytest.mark.parametrize(("path", "img_size"), CASES, ids=CASE_IDS)
def test_params_equal_module(path: Path, img_size: tuple[int, int]) -> None:
    model = _meta_model(path, img_size)
    analytic = ir_of(path).count(img_size)
    for part in analytic.children:  # per top-level attribute first, so a failure names the module
        owner = model
        for attr in part.name.split("."):
            owner = getattr(owner, attr)
        actual = owner.numel() if isinstance(owner, torch.nn.Parameter) else sum(p.numel() for p in owner.parameters())
        where = f"{path.stem}@{size_text(img_size)} {part.name}"
        assert part.params == actual, f"{where}: analytic {part.params:,} != {actual:,}"
    total = sum(p.numel() for p in model.parameters())
    at = f"{path.stem}@{size_text(img_size)}"
    assert analytic.params == total, f"{at}: analytic {analytic.params:,} != module {total:,}"


@pytest.mark.parametrize(("path", "img_size"), CASES, ids=CASE_IDS)
def test_macs_equal_flop_counter(path: Path, img_size: tuple[int, int]) -> None:
    model = _meta_model(path, img_size)
    x = torch.empty(1, ir_of(path).spec.in_chans, *img_size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    measured = counter.get_total_flops()
    analytic = ir_of(path).count(img_size).macs
    assert measured % 2 == 0
    at = f"{path.stem}@{size_text(img_size)}"
    assert analytic == measured // 2, f"{at}: analytic {analytic:,} MACs != counted {measured // 2:,}"


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_breakdown_sums_to_total(path: Path) -> None:
    total = ir_of(path).count(ir_of(path).spec.img_size)
    for _name, node in total.walk():
        if node.children:
            assert node.params == sum(c.params for c in node.children)
            assert node.macs == sum(c.macs for c in node.children)


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_every_mac_has_an_operation_type(path: Path) -> None:
    """``archgen count --by op`` must account for all MACs: no leaf with MACs lacks its op."""
    total = ir_of(path).count(ir_of(path).spec.img_size)
    untyped = [name for name, node in total.walk() if not node.children and node.macs and not node.op]
    assert not untyped, f"{path.stem}: {untyped[:5]}"
    assert sum(c.macs for c in total.by_op().values()) == total.macs

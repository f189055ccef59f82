"""Generated-module health, on the smallest spec of each family: gradients reach every parameter,
and the module traces whole under torch.compile(fullgraph=True) and torch.export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import SPECS, factory, ir_of


def _smallest_per_family() -> list[Path]:
    best: dict[str, Path] = {}
    for path in SPECS:
        ir = ir_of(path)
        size = ir.count(ir.spec.img_size).params
        family = ir.spec.family
        if family not in best or size < ir_of(best[family]).count(ir_of(best[family]).spec.img_size).params:
            best[family] = path
    return sorted(best.values())


SMALLEST = _smallest_per_family()


def _input(path: Path) -> torch.Tensor:
    spec = ir_of(path).spec
    return torch.randn(2, spec.in_chans, *spec.img_size)


@pytest.mark.parametrize("path", SMALLEST, ids=[p.stem for p in SMALLEST])
def test_every_parameter_gets_a_gradient(path: Path) -> None:
    model = factory(path)(drop_path_rate=0.1).train()
    out = model(_input(path))
    outs = out if isinstance(out, tuple) else (out,)
    sum(o.sum() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{path.stem}: no gradient for {missing}"


@pytest.mark.parametrize("path", SMALLEST, ids=[p.stem for p in SMALLEST])
def test_compiles_as_one_graph(path: Path) -> None:
    """fullgraph=True: dynamo captures the whole forward or fails. One model (deit_ti) also runs through inductor
    (generated C++ kernels); the others through the eager backend, which checks the same capture without the
    half minute to minute of kernel generation each takes (VOLO-D1: 75 s, Twins-SVT-S: 40 s)."""
    model = factory(path)().eval()
    x = _input(path)
    backend = "inductor" if path.stem == "deit_ti" else "eager"
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("path", SMALLEST, ids=[p.stem for p in SMALLEST])
def test_exports(path: Path) -> None:
    model = factory(path)().eval()
    x = _input(path)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x))

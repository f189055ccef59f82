"""timm's model contract on every generated module small enough to run on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import ALL, LARGE, factory, ir_of

SMALL = [p for p in ALL if ir_of(p).count(ir_of(p).spec.img_size).params <= LARGE]


def _input(path: Path, batch: int = 2) -> torch.Tensor:
    spec = ir_of(path).spec
    return torch.randn(batch, spec.in_chans, spec.img_size, spec.img_size)


@pytest.mark.parametrize("path", SMALL, ids=[p.stem for p in SMALL])
def test_model_contract(path: Path) -> None:
    ir = ir_of(path)
    model = factory(path)().eval()
    final = ir.final(ir.spec.img_size)
    assert model.num_features == model.head_hidden_size == final.dim
    size = ir.spec.img_size
    assert model.pretrained_cfg["input_size"] == (ir.spec.in_chans, size, size), f"{path.stem}: cfg input_size"
    assert model.pretrained_cfg["fixed_input_size"] is True, f"{path.stem}: takes only its img_size"
    x = _input(path)
    with torch.no_grad():
        feats = model.forward_features(x)
        tokens = (final.h, final.w) if final.layout == "grid" else (final.n,)  # Swin returns its NHWC grid
        assert tuple(feats.shape) == (2, *tokens, final.dim)
        assert tuple(model.forward_head(feats, pre_logits=True).shape) == (2, model.head_hidden_size)
        # no classifier (num_classes 0: an encoder such as DINOv2's) gives the pooled features, as in timm
        assert tuple(model(x).shape) == (2, ir.spec.num_classes or final.dim)
        model.reset_classifier(10)
        assert tuple(model(x).shape) == (2, 10)
        model.reset_classifier(0)
        assert tuple(model(x).shape) == (2, final.dim)
    names = {n for n, _ in model.named_parameters()}
    assert model.no_weight_decay() <= names, model.no_weight_decay() - names


TINY = sorted(SMALL, key=lambda p: ir_of(p).count(ir_of(p).spec.img_size).params)[:2]


@pytest.mark.parametrize("path", TINY, ids=[p.stem for p in TINY])
def test_grad_checkpointing_gives_identical_outputs_and_grads(path: Path) -> None:
    model = factory(path)().eval()  # eval: no dropout; gradients still flow
    x = _input(path)
    plain = model(x)
    plain.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    ckpt = model(x)
    ckpt.sum().backward()
    assert torch.equal(plain, ckpt)
    for n, p in model.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-6), n


def test_distilled_head_trains_on_both_when_asked_and_averages_otherwise() -> None:
    """timm's rule: both logits only in distilled training (set_distilled_training), else their mean."""
    path = next(p for p in SMALL if p.stem == "deit_ti_distilled")
    model = factory(path)()
    x = _input(path)
    model.train()
    assert isinstance(model(x), torch.Tensor)
    model.set_distilled_training(True)
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 2
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        expected = (model.head(feats[:, 0]) + model.head_dist(feats[:, 1])) / 2
        assert torch.allclose(model(x), expected)


def test_drop_path_rate_reaches_the_blocks() -> None:
    path = next(p for p in SMALL if p.stem == "deit_ti")
    model = factory(path)(drop_path_rate=0.1)
    rates = [b.drop_path.p for b in model.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)

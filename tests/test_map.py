"""The attention-pool (MAP) head against timm's VisionTransformer with global_pool='map': MACs on the meta
device, the classifier API (pre_logits, reset_classifier dropping the pool) and the latent's init."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import factory, ir_of

ROOT = Path(__file__).resolve().parent.parent
SIGLIP = ROOT / "specs" / "vit_b16_siglip.yaml"


def _macs(model: torch.nn.Module, img: int) -> int:
    # grad mode: under no_grad, torch's module tracker fails on timm's pool, whose q reads a view of the latent
    # parameter made there (our pool projects the latent itself, then expands it)
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, img, img, device="meta"))
    return counter.get_total_flops() // 2


def test_macs_equal_timm_on_meta() -> None:
    ir = ir_of(SIGLIP)
    with torch.device("meta"):
        ref = timm.create_model(ir.spec.reference.model, pretrained=False, num_classes=ir.spec.num_classes)
        ours = factory(SIGLIP)()
    assert _macs(ours, 224) == _macs(ref, 224) == ir.count(224).macs


@pytest.mark.slow  # two 94M-parameter models on CPU
def test_classifier_api_as_timm() -> None:
    ref = timm.create_model("vit_base_patch16_siglip_224", pretrained=False, num_classes=10).eval()
    ours = factory(SIGLIP)(num_classes=10).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        feats = ours.forward_features(x)
        pre = ours.forward_head(feats, pre_logits=True)
        assert pre.shape == (1, 768)
        torch.testing.assert_close(pre, ref.forward_head(ref.forward_features(x), pre_logits=True))
    for model in (ref, ours):
        model.reset_classifier(5, "avg")  # another pooling drops the attention pool
        assert model.attn_pool is None and model.head.out_features == 5
    with torch.no_grad():
        ours.head.load_state_dict(ref.head.state_dict())
        torch.testing.assert_close(ours(x), ref(x))
    assert list(ours.state_dict()) == list(ref.state_dict())
    with pytest.raises(ValueError, match="attention pool"):
        ours.reset_classifier(5, "map")


def test_latent_init_is_truncated_normal_of_std_dim_to_the_minus_half() -> None:
    torch.manual_seed(0)
    latent = factory(SIGLIP)().attn_pool.latent
    std = 768**-0.5
    assert latent.abs().max() <= 2 * std
    assert 0.8 * std < latent.std() < std  # a normal truncated at 2 sigma keeps 88% of its standard deviation

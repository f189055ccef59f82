"""timm's model contract, compared with timm's own models on the same weights: pretrained_cfg and the data
config it implies, forward_intermediates / prune_intermediate_layers / feature_info, dynamic input sizes,
set_input_size, classifier access and reset, constructor arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import ROOT, SPECS, factory, ir_of, module_of
from conftest import timm_pair as _pair

timm = pytest.importorskip("timm")
from timm.data import resolve_data_config  # noqa: E402

TIMM_SPECS = [p for p in SPECS if (r := ir_of(p).spec.reference) is not None and r.package == "timm"]
CFG_FIELDS = ("tag", "hf_hub_id", "num_classes", "input_size", "pool_size", "fixed_input_size", "mean", "std",
              "crop_pct", "crop_mode", "interpolation", "first_conv", "classifier")  # fmt: skip


def _spec(name: str) -> Path:
    return ROOT / "specs" / f"{name}.yaml"


@pytest.mark.parametrize("path", TIMM_SPECS, ids=[p.stem for p in TIMM_SPECS])
def test_pretrained_cfg_and_data_config_equal_timms(path: Path) -> None:
    """The file's cfg is the reference weights'; a model built at their size (cait_m36: 384) reports it too."""
    spec = ir_of(path).spec
    size = spec.reference.img_size or spec.img_size
    with torch.device("meta"):
        ref = timm.create_model(spec.reference.model, pretrained=False)
        ours = factory(path)(img_size=size)
    theirs = ref.pretrained_cfg
    card_only = {"fixed_input_size"} if spec.reference.fixed_input_size is not None else set()
    for field in CFG_FIELDS:
        assert module_of(path).pretrained_cfg[field] == theirs.get(field), f"{path.stem}: pretrained_cfg[{field!r}]"
        if field not in card_only:
            assert ours.pretrained_cfg[field] == theirs.get(field), f"{path.stem}: model.pretrained_cfg[{field!r}]"
    if card_only:
        # the card's word differs from the architecture's: the built model reports what it takes, and does take it
        with torch.device("meta"):
            out = ours(torch.empty(1, spec.in_chans, 160, 96))
        assert not ours.pretrained_cfg["fixed_input_size"], path.stem
        assert out.shape == (1, spec.num_classes), path.stem
    assert resolve_data_config({}, model=ours) == resolve_data_config({}, model=ref), path.stem


# (spec, keyword arguments of forward_intermediates) for the families timm implements the API for
CASES = [
    ("deit_ti", {}),
    ("deit_ti", {"indices": 3, "norm": True}),
    ("deit_ti", {"indices": [0, -1], "output_fmt": "NLC", "intermediates_only": True}),
    ("deit_ti_distilled", {"indices": [2, 5], "norm": True}),
    ("deit3_s", {"indices": 2, "stop_early": True}),
    ("cait_xxs24", {"indices": [1, 7, 23], "norm": True}),
    ("volo_d1", {}),
    ("volo_d1", {"indices": [0, 3], "norm": True}),
    ("volo_d1", {"indices": 2, "intermediates_only": True}),
    ("pvtv2_b0", {}),  # a pyramid: each stage's normed output at strides 4 to 32, NCHW
    ("pvtv2_b0", {"indices": [0, 2], "stop_early": True}),
    # PiT: stage outputs at strides 8, 16, 32 (prefix tokens dropped); its final norm reads the class tokens alone
    ("pit_ti", {"indices": [0, 2], "norm": True}),
    ("pit_ti", {"indices": 1, "stop_early": True, "intermediates_only": True}),
]


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[f"{n}-{sorted(k.items())}" for n, k in CASES])
def test_forward_intermediates_equal_timms(name: str, kwargs: dict) -> None:
    ref, ours = _pair(name)
    assert ours.feature_info == [dict(f) for f in ref.feature_info], f"{name}: feature_info"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = ref.forward_intermediates(x, **kwargs), ours.forward_intermediates(x, **kwargs)
    if not kwargs.get("intermediates_only"):
        torch.testing.assert_close(b[0], a[0], rtol=0, atol=2e-5, msg=f"{name}: final features")
        a, b = a[1], b[1]
    assert len(a) == len(b), f"{name}: {len(b)} intermediates, timm {len(a)}"
    for i, (u, v) in enumerate(zip(a, b, strict=True)):
        assert u.shape == v.shape, f"{name}: intermediate {i} shape {tuple(v.shape)}, timm {tuple(u.shape)}"
        torch.testing.assert_close(v, u, rtol=0, atol=2e-5, msg=f"{name}: intermediate {i}")


PRUNED = [("deit_ti", [1, 4]), ("cait_xxs24", 2), ("volo_d1", [0, 1]), ("pvtv2_b0", [1]), ("pit_ti", [0, 1])]


@pytest.mark.parametrize(("name", "indices"), PRUNED)
def test_pruned_model_gives_timms_intermediates(name: str, indices: object) -> None:
    ref, ours = _pair(name)
    kept = ref.prune_intermediate_layers(indices, prune_norm=True)
    assert ours.prune_intermediate_layers(indices, prune_norm=True) == kept
    assert sum(p.numel() for p in ours.parameters()) < sum(p.numel() for p in factory(_spec(name))().parameters())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a = ref.forward_intermediates(x, kept, intermediates_only=True)
        b = ours.forward_intermediates(x, kept, intermediates_only=True)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(v, u, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", ["deit_ti", "deit3_s", "vit_b16_reg4_gap"])
def test_dynamic_img_size_equals_timms(name: str) -> None:
    """Another input size (here not even square) resamples the position table at forward, as timm does."""
    ref, ours = _pair(name, dynamic_img_size=True)
    x = torch.randn(1, 3, 160, 288)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=2e-5)


def test_another_input_size_without_dynamic_img_size_is_one_clear_error() -> None:
    """timm's rule: an AssertionError (torch._assert, which torch.fx traces), naming the way out."""
    model = factory(_spec("deit_ti"))().eval()
    assert model.pretrained_cfg["fixed_input_size"] is True
    assert factory(_spec("deit_ti"))(dynamic_img_size=True).pretrained_cfg["fixed_input_size"] is False
    with pytest.raises(AssertionError) as err, torch.no_grad():
        model(torch.randn(1, 3, 224, 256))
    assert str(err.value) == (
        "VisionTransformer expects 224x224 inputs, got 224x256: build it for that size (img_size) or with "
        "dynamic_img_size=True"
    )


@pytest.mark.parametrize("name", ["deit_ti", "volo_d1"])
def test_set_input_size_equals_timms(name: str) -> None:
    ref, ours = _pair(name)
    if name == "deit_ti":
        ref.set_input_size(img_size=(288, 288))
    else:  # timm's VOLO has no set_input_size: its 288 model with the table resampled by timm's function
        from timm.layers import resample_abs_pos_embed_nhwc

        state = ours.state_dict()
        state["pos_embed"] = resample_abs_pos_embed_nhwc(state["pos_embed"], new_size=[18, 18])
        ref = timm.create_model("volo_d1_224", pretrained=False, img_size=288).eval()
        ref.load_state_dict(state, strict=True)
    ours.set_input_size(288)
    x = torch.randn(1, 3, 288, 288)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=2e-5)


def test_classifier_access_and_reset_follow_timm() -> None:
    ref, ours = _pair("deit_ti")
    assert ours.get_classifier() is ours.head
    x = torch.randn(1, 3, 224, 224)
    ref.reset_classifier(7, "avg")
    ours.reset_classifier(7, "avg")
    with torch.no_grad():
        fa, fb = ref.forward_features(x), ours.forward_features(x)
        torch.testing.assert_close(ours.forward_head(fb, pre_logits=True), ref.forward_head(fa, pre_logits=True))
    assert ours(x).shape == (1, 7)
    with pytest.raises(ValueError, match="global_pool 'map'"):
        ours.reset_classifier(7, "map")
    distilled = factory(_spec("deit_ti_distilled"))()
    assert distilled.get_classifier() == (distilled.head, distilled.head_dist)


def test_constructor_arguments_reach_the_modules_they_name() -> None:
    model = factory(_spec("cait_xxs24"))(drop_rate=0.1, attn_drop_rate=0.2, proj_drop_rate=0.3, in_chans=1)
    assert model.head_drop.p == 0.1
    assert model.blocks[0].attn.attn_drop.p == 0.2 and model.blocks_token_only[0].attn.attn_drop == 0.2
    assert model.blocks[0].attn.proj_drop.p == 0.3 and model.blocks[5].mlp.drop.p == 0.3
    assert model.patch_embed.proj.weight.shape[1] == 1
    ref = timm.create_model("cait_xxs24_224", pretrained=False, in_chans=1)
    model.load_state_dict(ref.state_dict(), strict=True)
    model.train()
    x = torch.randn(2, 1, 224, 224)
    assert not torch.equal(model(x), model(x)), "dropout is active in training"

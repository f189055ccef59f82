"""`import archgen.timm`: every spec is a timm model by its spec name, built, loaded and wrapped the way timm's
train, validate and benchmark scripts do it (create_model with their arguments, the data config and its
transforms, the optimizer factory with no_weight_decay, EMA, grad checkpointing, features_only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import ROOT, SPECS, factory

timm = pytest.importorskip("timm")
from timm.data import create_transform, resolve_data_config  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.utils import ModelEmaV3  # noqa: E402

import archgen.timm  # noqa: E402, F401  (registers the specs)


def test_every_spec_is_a_timm_model() -> None:
    assert {p.stem for p in SPECS} <= set(timm.list_models())
    # archgen's own entrypoints: a spec named as a timm model would replace timm's, the reference it is checked on
    theirs = {p.stem for p in SPECS if timm.models.model_entrypoint(p.stem).__module__ != "archgen.timm"}
    assert not theirs, f"specs named as timm's own models: {sorted(theirs)}"
    assert timm.list_models("ceit*") == ["ceit_b", "ceit_s", "ceit_t"]
    assert timm.models.get_pretrained_cfg("volo_d1").hf_hub_id == "timm/volo_d1_224.sail_in1k"


@pytest.mark.parametrize("name", ["ceit_t", "deepvit_s"])
def test_create_model_builds_the_generated_module(name: str) -> None:
    """CeiT and DeepViT, which timm lacks, with timm's usual arguments; the layout is the committed file's."""
    model = timm.create_model(name, pretrained=False, num_classes=10, drop_rate=0.1, drop_path_rate=0.1, in_chans=3)
    with torch.device("meta"):
        committed = factory(ROOT / "specs" / f"{name}.yaml")(num_classes=10)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in committed.state_dict().items()
    }
    assert model.head_drop.p == 0.1 and model.blocks[-1].drop_path.p == pytest.approx(0.1)
    assert model(torch.randn(2, 3, 224, 224)).shape == (2, 10)


def test_pretrained_weights_load_through_timm(tmp_path: Path) -> None:
    """timm's loader with the registered cfg (a local file stands in for the hub): a 10-class head is new."""
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "deit_ti.pth"
    torch.save(ref.state_dict(), path)
    model = timm.create_model("deit_ti", pretrained=True, pretrained_cfg_overlay={"file": str(path)}, num_classes=10)
    assert torch.equal(model.blocks[7].mlp.fc1.weight, ref.blocks[7].mlp.fc1.weight)
    assert model.head.weight.shape == (10, 192)


@pytest.mark.parametrize(("name", "indices"), [("ceit_t", (2, 5, 11)), ("volo_d1", (0, 3)), ("cait_xxs24", (4,))])
def test_features_only_equals_forward_intermediates(name: str, indices: tuple[int, ...]) -> None:
    full = timm.create_model(name).eval()
    features = timm.create_model(name, features_only=True, out_indices=indices).eval()
    kept = features.model.state_dict()
    assert set(kept) < set(full.state_dict())  # pruned
    features.model.load_state_dict({k: full.state_dict()[k] for k in kept}, strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = full.forward_intermediates(x, list(indices), intermediates_only=True)
        got = features(x)
    assert features.feature_info.channels() == [full.feature_info[i]["num_chs"] for i in indices]
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_a_training_step_as_timms_train_script_takes_it() -> None:
    from PIL import Image

    model = timm.create_model("ceit_t", pretrained=False, num_classes=5, drop_path_rate=0.1)
    config = resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 224, 224) and config["crop_pct"] == 0.875
    image = Image.new("RGB", (320, 256), (120, 40, 200))
    train, evaluate = create_transform(**config, is_training=True), create_transform(**config)
    batch = torch.stack([train(image), evaluate(image)])
    assert batch.shape == (2, 3, 224, 224)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(model.pos_embed) in no_decay and id(model.cls_token) in no_decay
    ema = ModelEmaV3(model, decay=0.9)
    model.set_grad_checkpointing(True)
    model.train()
    loss = torch.nn.functional.cross_entropy(model(batch), torch.tensor([1, 3]))
    loss.backward()
    optimizer.step()
    ema.update(model)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

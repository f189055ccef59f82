"""Twins: its dense-task features equal timm's, and a stage's ``insert`` (a residual op between two blocks,
stored beside the blocks' container: Twins' conditional position encoding) works in any stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archgen.errors import SpecError
from conftest import ROOT, assert_counts_exact, compile_data, factory, saved_activation_bytes, timm_pair

timm = pytest.importorskip("timm")
SIZE = 160  # grids of 40, 20, 10 and 5 patches a side: none a multiple of the 7x7 windows (padded)


@pytest.mark.slow
def test_features_equal_timms() -> None:
    """Stage outputs at strides 4 to 32, NCHW, the last one normed on request; feature_info as timm's (whose
    module names `block.i` name no module: ours name the stages' entries `blocks.i`); pruning as timm's."""
    ref, ours = timm_pair("twins_svt_s", img_size=SIZE)
    ranks = [(f["num_chs"], f["reduction"]) for f in ours.feature_info]
    assert ranks == [(f["num_chs"], f["reduction"]) for f in ref.feature_info], "twins_svt_s: feature_info"
    assert all(ours.get_submodule(f["module"]) is ours.blocks[i] for i, f in enumerate(ours.feature_info))
    x = torch.randn(1, 3, SIZE, SIZE)
    for kwargs in ({}, {"indices": [0, 3], "norm": True}, {"indices": 2, "intermediates_only": True}):
        with torch.no_grad():
            a, b = ref.forward_intermediates(x, **kwargs), ours.forward_intermediates(x, **kwargs)
        if not kwargs.get("intermediates_only"):
            torch.testing.assert_close(b[0], a[0], rtol=0, atol=2e-5, msg=f"twins_svt_s {kwargs}: features")
            a, b = a[1], b[1]
        assert [tuple(t.shape) for t in b] == [tuple(t.shape) for t in a], f"twins_svt_s {kwargs}"
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            torch.testing.assert_close(v, u, rtol=0, atol=2e-5, msg=f"twins_svt_s {kwargs}: intermediate {i}")
    kept = ref.prune_intermediate_layers([0, 1], prune_norm=True)
    assert ours.prune_intermediate_layers([0, 1], prune_norm=True) == kept
    assert list(ours.state_dict()) == list(ref.state_dict()), "twins_svt_s pruned: state_dict keys"
    with torch.no_grad():
        a = ref.forward_intermediates(x, kept, intermediates_only=True)
        b = ours.forward_intermediates(x, kept, intermediates_only=True)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(v, u, rtol=0, atol=2e-5, msg="twins_svt_s pruned")


def test_position_encodings_take_no_weight_decay_as_in_timm() -> None:
    with torch.device("meta"):
        ref = timm.create_model("twins_pcpvt_small", pretrained=False)
        ours = factory(ROOT / "specs" / "twins_pcpvt_s.yaml")()
    assert ours.no_weight_decay() == ref.no_weight_decay(), "twins_pcpvt_s: no_weight_decay"


def _inserted(insert: dict, depth: int = 3, block: list | None = None) -> dict:
    block = block or [{"op": {"kind": "lsa", "ws": 3}}, {"op": "mlp"}]
    return {
        "name": "inserted", "family": "test", "title": "an insert", "paper": "none", "class_name": "Inserted",
        "img_size": 64, "in_chans": 3, "num_classes": 10, "norm_eps": 1.0e-6,
        "stem": {"kind": "conv_embed", "key": "embeds.0", "kernel": 4, "stride": 4, "dim": 32},
        "stages": [
            {"key": "blocks", "depth": depth, "heads": 2, "mlp_ratio": 2.0, "block": block, "insert": insert},
            {"kind": "conv_embed", "key": "embeds.1", "kernel": 2, "stride": 2, "dim": 64},
        ],
        "norm": "layernorm", "head": {"kind": "avg", "fc_norm": False},
    }  # fmt: skip


@pytest.mark.parametrize("after", [1, 3])
def test_insert_runs_between_blocks_with_exact_counts_and_memory(after: int, tmp_path: Path) -> None:
    """A 16x16 grid in 3x3 windows (padded to 18x18); the position encoding after block `after` under a plain
    name, an lsa there on the last run of `after = depth` (no blocks after it)."""
    ir, text, module = compile_data(_inserted({"after": after, "key": "peg", "op": "peg"}), tmp_path)
    assert "x = x + self.peg(x)" in text and (f"self.blocks[{after}:]" in text) == (after < 3)
    model = module.inserted()
    assert "peg.proj.0.weight" in model.state_dict()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # the same as running the blocks and the insert by hand
        y = model.blocks[:after](model.embeds[0](image))
        y = model.blocks[after:](y + model.peg(y))
        want = model.norm(model.embeds[1](y.permute(0, 3, 1, 2))).flatten(1, 2)
        torch.testing.assert_close(model.forward_features(image), want, rtol=0, atol=0)
    assert_counts_exact(f"inserted after {after}", ir, module.inserted, 64)
    for checkpointing in (False, True):
        analytic = ir.memory(64, 2, checkpointing=checkpointing).activation_bytes
        saved = saved_activation_bytes(model, torch.float32, checkpointing, 2, 64)
        assert analytic == saved, f"inserted after {after}, checkpointing={checkpointing}: {analytic:,} != {saved:,}"


@pytest.mark.parametrize(
    ("insert", "message"),
    [
        ({"after": 4, "key": "peg", "op": "peg"}, "`insert.after` is 4, but the stage has 3 blocks"),
        ({"after": 1, "key": "blocks", "op": "peg"}, "must lie outside the blocks' container"),
        ({"after": 1, "key": "pos.1", "op": "peg"}, "'pos.1' out of order or taken; expected pos.0"),
        ({"after": 1, "key": "embeds", "op": "peg"}, "'embeds' out of order or taken"),
        ({"after": 1, "key": "peg", "op": {"kind": "peg", "kernel": 4}}, "insert.op.kernel: 4 is even"),
    ],
)
def test_bad_inserts_name_their_field(insert: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        compile_data(json.loads(json.dumps(_inserted(insert))), tmp_path)
    assert message in str(err.value), str(err.value)

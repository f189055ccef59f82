"""Blocks that differ within one stage (``cycle:``): block j of the stage takes pattern j % len(cycle), each
pattern its own block class; counts and saved activations stay exact (Twins-SVT alternates local and global
attention this way)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archgen.errors import SpecError
from conftest import assert_counts_exact, compile_data, saved_activation_bytes


def _cycle_spec(patterns: list[dict], depth: int = 3, name: str = "cycled") -> dict:
    return {
        "name": name, "family": "test", "title": "a cycle of blocks", "paper": "none", "class_name": "Cycled",
        "img_size": 64, "in_chans": 3, "num_classes": 10, "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 8, "dim": 32},
        "stages": [{"key": "blocks", "depth": depth, "heads": 2, "mlp_ratio": 2.0, "cycle": patterns}],
        "norm": "layernorm", "head": {"kind": "avg"},
    }  # fmt: skip


GLOBAL = {"block": [{"op": "mhsa"}, {"op": "mlp"}]}
OUTLOOK = {"block": [{"op": {"kind": "outlook", "kernel_size": 3}}, {"op": "mlp"}]}


def test_blocks_take_the_patterns_in_turn_with_exact_counts_and_memory(tmp_path: Path) -> None:
    ir, text, module = compile_data(_cycle_spec([GLOBAL, OUTLOOK]), tmp_path)
    model = module.cycled()
    assert [type(b).__name__ for b in model.blocks] == ["Block", "OutlookBlock", "Block"]
    assert "if i % 2 == 0" in text
    for j, block in enumerate(model.blocks):  # the stochastic-depth schedule runs over all blocks alike
        assert block.drop_path.p == pytest.approx(0.0)
        assert hasattr(block, "attn") and (j % 2 == 1) == hasattr(block.attn, "v"), f"block {j}"
    assert_counts_exact("cycled", ir, module.cycled, 64)
    counted = ir.count(64)
    blocks = next(c for c in counted.children if c.name == "blocks")
    assert [c.name for c in blocks.children] == ["0", "1", "2"]
    assert blocks.children[0].params == blocks.children[2].params != blocks.children[1].params
    for checkpointing in (False, True):
        analytic = ir.memory(64, 2, checkpointing=checkpointing).activation_bytes
        saved = saved_activation_bytes(model, torch.float32, checkpointing, 2, 64)
        assert analytic == saved, f"cycled, checkpointing={checkpointing}: analytic {analytic:,} != saved {saved:,}"


def test_three_patterns_and_a_dropped_path_rate(tmp_path: Path) -> None:
    third = {"block": [{"op": "talking_heads"}, {"op": "mlp"}]}
    ir, _, module = compile_data(_cycle_spec([GLOBAL, OUTLOOK, third], depth=4), tmp_path)
    model = module.cycled(drop_path_rate=0.3)
    kinds = [type(b).__name__ for b in model.blocks]
    assert kinds[0] == kinds[3] and len(set(kinds[:3])) == 3, kinds
    assert [round(b.drop_path.p, 4) for b in model.blocks] == [0.0, 0.1, 0.2, 0.3]
    assert_counts_exact("cycled3", ir, module.cycled, 64)
    model.eval()(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"cycle": [GLOBAL]}, "`cycle` alternates two or more patterns"),
        ({"cycle": [GLOBAL, OUTLOOK], "block": GLOBAL["block"]}, "give exactly one of `block`"),
        ({"cycle": [GLOBAL, {"block": [{"op": "mlp"}, {"op": {"kind": "outlook", "kernel_size": 40}}]}]}, "cycle[1]"),
    ],
)
def test_bad_cycles_name_their_field(tmp_path: Path, stage: dict, message: str) -> None:
    data = _cycle_spec([GLOBAL, OUTLOOK])
    fresh = json.loads(json.dumps(stage))  # no objects shared with the spec's others (YAML anchors)
    data["stages"][0] = {k: v for k, v in data["stages"][0].items() if k != "cycle"} | fresh
    with pytest.raises(SpecError) as err:
        compile_data(data, tmp_path)
    assert message in str(err.value), str(err.value)

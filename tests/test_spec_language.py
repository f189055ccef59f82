"""The spec language as a researcher writes it: a variant restates only what differs from its parent."""

from __future__ import annotations

from pathlib import Path

import pytest

from archgen import specs
from archgen.errors import SpecError
from conftest import ROOT, SPECS, ir_of

CHILDREN = [p for p in SPECS if "\nextends:" in p.read_text(encoding="utf-8")]
MAX_CHILD_LINES = 12


def _architecture_lines(path: Path) -> int:
    """Lines above `published:` (the schema comment and comments included)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return next((i for i, line in enumerate(lines) if line.startswith("published:")), len(lines))


@pytest.mark.parametrize("path", CHILDREN, ids=[p.stem for p in CHILDREN])
def test_child_spec_restates_only_what_differs(path: Path) -> None:
    n = _architecture_lines(path)
    assert n <= MAX_CHILD_LINES, f"{path.stem}: {n} lines above `published:` (at most {MAX_CHILD_LINES})"


def test_stage_mapping_merges_into_the_parent_stage_with_that_key() -> None:
    volo_d3 = ir_of(ROOT / "specs" / "volo_d3.yaml").spec  # volo_d3 -> volo_d2 -> volo_d1
    depths = {stage.key: getattr(stage, "depth", None) for stage in volo_d3.stages}
    assert depths == {"network.0": 8, "network.1": None, "network.2": 8, "network.3": 16, "network.4": 4,
                      "post_network": 2}  # fmt: skip
    assert volo_d3.stages[1].dim == 512  # from volo_d2
    assert volo_d3.stages[2].block[0].op.qkv_bias is False  # from volo_d1, untouched by both children


def test_published_and_reference_belong_to_their_variant() -> None:
    parent = ir_of(ROOT / "specs" / "vit_b16.yaml").spec
    child = ir_of(ROOT / "specs" / "vit_b16_sincos.yaml").spec
    assert parent.published and parent.reference is not None
    assert child.published == () and child.reference is None


def test_child_stage_key_typo_is_named_at_the_child(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text((ROOT / "specs" / "deit_ti.yaml").read_text().replace("deit_ti", "parent"))
    for name in ("vit_b16",):
        (tmp_path / f"{name}.yaml").write_text((ROOT / "specs" / f"{name}.yaml").read_text())
    (tmp_path / "child.yaml").write_text("extends: parent\nname: child\nstages: {blokcs: {depth: 6}}\n")
    with pytest.raises(SpecError, match=r"child.yaml:3:10: stages.blokcs: no stage with this key; did you mean"):
        specs.load(tmp_path / "child.yaml")

"""The spec language as a researcher writes it: a variant restates only what differs from its parent."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from archgen import specs
from archgen.compiler import resolve
from archgen.errors import SpecError
from archgen.fidelity import resolutions
from archgen.loader import MAX_NODES, dump_yaml, read_yaml
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


# --- bad input ------------------------------------------------------------------------------------------

BAD = ROOT / "tests" / "bad_specs"
EXPECTED = dict(
    line.split(": ", 1) for line in (BAD / "expected_errors.txt").read_text(encoding="utf-8").splitlines() if line
)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_count_refuses_every_bad_spec_with_builds_message(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`count` resolves and counts; `build` resolves and emits. Every bad spec is refused while resolving
    (tests/test_cli.py checks build's message), so both commands refuse it with the same line."""
    monkeypatch.chdir(ROOT)
    with pytest.raises(SpecError) as caught:
        ir = resolve(specs.load(Path("tests/bad_specs") / f"{name}.yaml"))
        for size in resolutions(ir):
            ir.count(size)
    assert f"error: {caught.value}" == EXPECTED[name]


def _unreadable(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "sparse":
        with path.open("wb") as fh:
            fh.truncate(6 << 30)  # 6 GiB of holes: reading it whole would exhaust memory
    else:
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize("kind", ["fifo", "directory", "sparse", "dev_zero"])
def test_a_spec_that_is_no_regular_file_is_refused_before_reading(kind: str, tmp_path: Path) -> None:
    path = _unreadable(kind, tmp_path)
    expected = "file is 6442450944 bytes; specs are limited to 1048576" if kind == "sparse" else "not a regular file"
    start = time.perf_counter()
    with pytest.raises(SpecError) as caught:
        specs.load(path)
    assert time.perf_counter() - start < 2
    assert str(caught.value) == f"{specs.label_for(path)}:1:1: {expected}"


def _unknown_keys(n: int) -> str:
    return "".join(f"unknown_key_{i}: {i}\n" for i in range(n))


def test_ten_thousand_unknown_keys_are_reported_at_once(tmp_path: Path) -> None:
    """Error reporting and the `extends:` merge take time linear in the keys (10,000 unknown keys in 117 KB
    took over 30 s when both were quadratic): a top-level spec and a child of one, each in a few seconds."""
    parent = (BAD / "ok_parent.yaml").read_text(encoding="utf-8")
    (tmp_path / "ok_parent.yaml").write_text(parent, encoding="utf-8")
    (tmp_path / "many.yaml").write_text(parent.replace("ok_parent", "many") + _unknown_keys(10_000), encoding="utf-8")
    (tmp_path / "child.yaml").write_text("extends: ok_parent\nname: child\n" + _unknown_keys(10_000), encoding="utf-8")
    for name, line in (("many", 24), ("child", 3)):
        start = time.perf_counter()
        with pytest.raises(SpecError) as caught:
            specs.load(tmp_path / f"{name}.yaml")
        elapsed = time.perf_counter() - start
        assert elapsed < 10, f"{name}: {elapsed:.1f} s"
        assert str(caught.value).startswith(f"{specs.label_for(tmp_path / f'{name}.yaml')}:{line}:1: unknown_key_0:")
        assert str(caught.value).endswith("(and 9999 more)")


def test_a_child_blames_its_own_value_not_the_extends_line(tmp_path: Path) -> None:
    """A value the user wrote that makes an inherited one fail is reported at the user's line."""
    (tmp_path / "wide.yaml").write_text(
        "extends: deit_s\nname: wide\ntitle: DeiT-S at 760\nstem: {dim: 760}\n", encoding="utf-8"
    )
    with pytest.raises(SpecError) as caught:
        resolve(specs.load(tmp_path / "wide.yaml"))
    label = specs.label_for(tmp_path / "wide.yaml")
    assert str(caught.value) == (
        f"{label}:4:13: stem.dim: stages[0].heads: 6 does not divide the token width 760 "
        "(inherited from specs/deit_s.yaml:10:26)"
    )


def test_an_unknown_parent_gets_a_suggestion_from_every_search_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "my_base.yaml").write_text((BAD / "ok_parent.yaml").read_text().replace("ok_parent", "my_base"))
    monkeypatch.setenv("ARCHGEN_SPECS", str(mine))
    (tmp_path / "a.yaml").write_text("extends: my_bsae\nname: a\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("extends: cait_xxs42\nname: b\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"a.yaml:1:10: extends: parent 'my_bsae' not found; did you mean 'my_base'\?"):
        specs.load(tmp_path / "a.yaml")
    with pytest.raises(SpecError, match=r"extends: parent 'cait_xxs42' not found; did you mean 'cait_xxs24'\?"):
        specs.load(tmp_path / "b.yaml")


@pytest.mark.parametrize("name", ["a" * 300, "../../etc/passwd", "Deit_S", "deit s", "x\x00y"])
def test_a_name_that_is_no_spec_name_never_reaches_the_file_system(name: str, tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"extends": name, "name": "child"}), encoding="utf-8")
    with pytest.raises(SpecError, match=r"child.yaml:1:10: extends: must name another spec by its name"):
        specs.load(tmp_path / "child.yaml")
    if "/" not in name:
        with pytest.raises(SpecError, match=r"no spec named"):
            specs.find(name)


def test_count_blames_the_option_for_a_resolution_the_spec_cannot_take(tmp_path: Path) -> None:
    def count(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "archgen", "count", "deit_s", *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    for size, message in (
        ("230", "--img-size: 230: stem.patch_size: 16 does not divide the image size 230 (specs/vit_b16.yaml:13:39)"),
        ("0", "--img-size 0: must be between 1 and 4,096"),  # the option's own range, checked before the spec
        ("100000", "--img-size 100000: must be between 1 and 4,096"),
    ):
        proc = count("--img-size", "224", "--img-size", size)
        assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"error: {message}\n")


def test_a_megabyte_of_values_stops_parsing_at_the_cap(tmp_path: Path) -> None:
    """Half a million list items in 1 MB: parsing stops at MAX_NODES values instead of building them all."""
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nx: [" + "1," * 500_000 + "1]\n", encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(SpecError, match=rf"big.yaml:2:\d+: more than {MAX_NODES} values"):
        specs.load(path)
    assert time.perf_counter() - start < 10


def test_an_error_echoes_at_most_a_line_of_what_the_user_wrote(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text((BAD / "ok_parent.yaml").read_text().replace("kind: token", "kind: " + "k" * 100_000))
    with pytest.raises(SpecError) as caught:
        specs.load(path)
    assert f"unknown kind '{'k' * 60}' (valid here: token," in str(caught.value)
    assert len(str(caught.value)) < 400


def test_dump_yaml_writes_what_the_loader_reads_back(tmp_path: Path) -> None:
    """yaml.safe_dump writes the string "0E0" bare, which a spec reads as the float 0.0 (spec YAML reads
    exponent floats without a dot); dump_yaml quotes it."""
    strings = ["0E0", "1e-6", "+2E5", "1_000", "true", "no", "null", "~", ".nan", "0x1F", "1:2", "", "- x", "#"]
    data = {"strings": strings, "numbers": [0, 1.0e-6, -2.5e300, 2**63, math.inf], "flags": [True, False, None]}
    path = tmp_path / "round.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    assert read_yaml(path, "round.yaml").data == data
    assert yaml.safe_load(yaml.safe_dump({"s": "0E0"})) == {"s": "0E0"}  # PyYAML alone round-trips it ...
    path.write_text(yaml.safe_dump({"s": "0E0"}), encoding="utf-8")
    assert read_yaml(path, "round.yaml").data == {"s": 0.0}  # ... but a spec reads it as a number

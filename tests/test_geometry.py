"""Height and width: `img_size: [H, W]` in specs, `--img-size HxW` on the CLI, `img_size=(H, W)` in the
generated factories, and non-square inputs counted exactly and computed as timm computes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from catalogue_cases import WITH_CLS, refusal, spec
from test_cli import archgen
from torch.utils.flop_counter import FlopCounterMode

from archgen.errors import SpecError
from archgen.geometry import parse_size, size_code, size_of, size_text, size_value
from conftest import (
    ROOT,
    assert_close_to_scale,
    assert_counts_exact,
    compile_data,
    factory,
    family_smallest,
    fixed_grid,
    ids,
    ir_of,
)

SPECS = ROOT / "specs"


def test_a_size_is_a_height_and_a_width() -> None:
    assert size_of(224) == (224, 224) and size_of([224, 320]) == (224, 320) and size_of((320, 224)) == (320, 224)
    assert [size_text(s) for s in (224, (224, 224), (224, 320))] == ["224", "224", "224x320"]
    assert [size_code(s) for s in ((224, 224), (224, 320))] == ["224", "(224, 320)"]
    assert [size_value(s) for s in ((224, 224), (224, 320))] == [224, [224, 320]]
    assert [parse_size(t) for t in ("224", "224x320", " 224 X 320 ")] == [(224, 224), (224, 320), (224, 320)]
    assert [parse_size(t) for t in ("", "x320", "224x", "224x320x3", "-224", "2.5", "224,320")] == [None] * 7


def _small(img_size: object, **extra: object) -> dict:
    """A tiny ViT with a class token and a learned table: /8 patches, two blocks."""
    stage = {"key": "blocks", "depth": 2, "heads": 2, "mlp_ratio": 2.0, "block": [{"op": "mhsa"}, {"op": "mlp"}]}
    stem = {"kind": "patch_embed", "patch_size": 8, "dim": 32}
    return spec("tiny_geom", stem, [stage], img_size=img_size, **WITH_CLS, **extra)


def test_a_non_square_spec_builds_a_non_square_model(tmp_path: Path) -> None:
    published = [{"img_size": [48, 64], "params": "0.0M", "source": "test", "deviation": "a test number"}]
    ir, text, module = compile_data(_small([32, 48], published=published), tmp_path)
    assert ir.spec.img_size == (32, 48) and ir.spec.published[0].img_size == (48, 64)
    assert "img_size: int | tuple[int, int] = (32, 48)," in text
    assert "tokens @32x48" in text and "@48x64: params" in text
    model = module.tiny_geom().eval()
    assert model.img_size == (32, 48) and model.pretrained_cfg["input_size"] == (3, 32, 48)
    assert model.pos_embed.shape == (1, 1 + 4 * 6, 32)
    assert module.pretrained_cfg["input_size"] == (3, 32, 48)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 48)).shape == (2, 5)
    with pytest.raises(Exception, match="expects 32x48 inputs, got 48x32"):
        model(torch.randn(1, 3, 48, 32))
    for size in ((32, 48), (48, 32), (40, 24)):
        assert_counts_exact("tiny_geom", ir, module.tiny_geom, size)


@pytest.mark.parametrize(
    ("img_size", "message"),
    [
        ([224, 320, 3], "img_size: write one side (224, a square) or [H, W] (e.g. [224, 320])"),
        ([224], "img_size: write one side (224, a square) or [H, W] (e.g. [224, 320])"),
        ([0, 320], "img_size: each side from 1 to 4096"),
        ([224, True], "img_size: a number, not true or false"),
        ([224, 100], "published[0].img_size: 224x100: stem.patch_size: 8 does not divide the image size 224x100"),
    ],
    ids=["three", "one", "zero", "bool", "undivided"],
)
def test_a_bad_size_is_one_line_at_the_field(img_size: list, message: str, tmp_path: Path) -> None:
    published = [{"img_size": img_size, "params": "1M", "source": "test"}]
    found = refusal(_small(32, published=published), tmp_path)
    assert found is not None and "\n" not in found and found.startswith(str(tmp_path)), found
    assert message in found, found


def test_count_takes_height_by_width() -> None:
    proc = archgen("count", "specs/deit_s.yaml", "--img-size", "224x320", "--img-size", "224", "--json")
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)["counts"]
    assert [c["img_size"] for c in counts] == [224, [224, 320]]
    ir = ir_of(SPECS / "deit_s.yaml")
    assert (counts[1]["params"], counts[1]["macs"]) == (ir.count((224, 320)).params, ir.count((224, 320)).macs)
    assert counts[1]["macs"] == 12 * (4 * 281 * 384**2 + 2 * 281**2 * 384 + 2 * 281 * 384 * 1536) + (
        280 * 16 * 16 * 3 * 384 + 384 * 1000
    )  # 1 + 14 * 20 tokens through 12 blocks; the patch conv; the classifier
    shown = archgen("count", "deit_s", "--img-size", "224x320")
    assert "224x320" in shown.stdout, shown.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("224x", "error: --img-size 224x: write one side (224, a square) or HxW (224x320)"),
        ("0x320", "error: --img-size 0: must be between 1 and 4,096"),
        ("224x330", "error: --img-size: 224x330: stem.patch_size: 16 does not divide the image size 224x330"),
    ],
)
def test_a_bad_size_option_is_one_line_naming_it(text: str, message: str) -> None:
    proc = archgen("count", "deit_s", "--img-size", text)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(message), proc.stderr


def test_sweep_takes_height_by_width() -> None:
    proc = archgen("sweep", "deit_ti", "--set", "img_size=224x320,224", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {json.dumps(r["values"]["img_size"]): r["macs"] for r in json.loads(proc.stdout)["rows"]}
    ir = ir_of(SPECS / "deit_ti.yaml")
    assert rows == {"[224, 320]": ir.count((224, 320)).macs, "224": ir.count(224).macs}


# --- non-square parity with timm ---------------------------------------------------------------------------

PARITY = [
    ("deit_s", (224, 320)),
    ("volo_d1", (224, 320)),
    ("cait_xxs24", (192, 288)),
    ("vit_b16_reg4_gap", (256, 192)),
    ("swin_t", (224, 448)),  # 56x112 patches: 8x16 windows in stage 1, a 7x14 grid in stage 4
]


def _macs(model: torch.nn.Module, size: tuple[int, int]) -> int:
    with FlopCounterMode(display=False) as counter:  # grad mode, as the size-variant check counts timm's
        model(torch.empty(1, 3, *size, device="meta"))
    return counter.get_total_flops() // 2


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), PARITY, ids=[f"{n}@{size_text(s)}" for n, s in PARITY])
def test_non_square_equals_timm(name: str, size: tuple[int, int]) -> None:
    """timm built at (H, W), its weights randomised and loaded strictly into ours: equal outputs; params and
    MACs counted equal ours and timm's module."""
    path = SPECS / f"{name}.yaml"
    ir = ir_of(path)
    model, classes = ir.spec.reference.model, ir.spec.num_classes
    ref = timm.create_model(model, pretrained=False, num_classes=classes, img_size=size).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = factory(path)(img_size=size).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.pretrained_cfg["input_size"] == (3, *size)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert_close_to_scale(f"{name}@{size_text(size)}", ours(x), ref(x))
    counted = ir.count(size)
    assert counted.params == sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    with torch.device("meta"):
        meta_ref = timm.create_model(model, pretrained=False, num_classes=classes, img_size=size).eval()
        meta_ours = factory(path)(img_size=size).eval()
    assert counted.macs == _macs(meta_ours, size) == _macs(meta_ref, size), f"{name}@{size_text(size)}: MACs"


@pytest.mark.slow
def test_dynamic_non_square_input_and_set_input_size_equal_timm() -> None:
    """Built at 224 with dynamic_img_size: a 160x288 input resamples the table as timm does; set_input_size
    to (160, 288) resamples it for good, as timm's does."""
    path = SPECS / "deit_s.yaml"
    ref = timm.create_model("deit_small_patch16_224", pretrained=False, dynamic_img_size=True).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = factory(path)(dynamic_img_size=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 160, 288)
    with torch.no_grad():
        assert_close_to_scale("deit_s dynamic 160x288", ours(x), ref(x))
    ref.set_input_size((160, 288))
    ours.set_input_size((160, 288))
    torch.testing.assert_close(ours.pos_embed, ref.pos_embed, rtol=0, atol=0)
    assert ours.img_size == (160, 288) and ours.pretrained_cfg["input_size"] == (3, 160, 288)
    with torch.no_grad():
        assert_close_to_scale("deit_s set_input_size 160x288", ours(x), ref(x))


@pytest.mark.parametrize("path", family_smallest(), ids=ids(family_smallest()))
def test_dynamic_img_size_runs_or_is_refused_in_one_line(path: Path) -> None:
    """With dynamic_img_size, a non-square input of another size runs to logits, or the model says in one line
    why not: a part built for one grid refuses the flag itself (BEiT's relative bias); a block of grid ops on a
    sequence (CeiT's LeFF), which finds the grid of another token count as a square (CeiT's rule), refuses a
    non-square one."""
    ir = ir_of(path)
    H, W = ir.spec.img_size
    with torch.device("meta"):
        if fixed_grid(path):
            with pytest.raises(ValueError, match=r"^dynamic_img_size: "):
                factory(path)(dynamic_img_size=True)
            return
        model = factory(path)(dynamic_img_size=True).eval()
        try:
            out = model(torch.empty(2, ir.spec.in_chans, H + 32, W + 64))
        except ValueError as e:
            assert "must give a square grid" in str(e) and "\n" not in str(e), f"{path.stem}: {e}"
            return
    assert out.shape == (2, model.num_classes or model.num_features), path.stem  # logits, or pooled features


def test_a_patch_size_that_does_not_divide_drops_the_remainder_as_timm(tmp_path: Path) -> None:
    """`remainder: drop` takes the whole patches (232 = 14 x 16 + 8: 14x14 of them) and leaves the last pixels
    out, as timm's strided conv does: timm's DeiT-Ti built at 232 loads strictly with equal outputs, counts
    exact; without the option the size is refused (the default)."""
    data = {"extends": "deit_ti", "name": "deit_ti_232", "img_size": 232, "stem": {"remainder": "drop"}}
    ir, text, module = compile_data(data, tmp_path)
    assert "patch 16x16 (8 px past the last patch left out)" in text  # the file's table says so
    ours = module.deit_ti_232().eval()
    ref = timm.create_model("deit_tiny_patch16_224", img_size=232).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 232, 232)
    with torch.no_grad():
        assert_close_to_scale("deit_ti@232 (remainder dropped)", ours(x), ref(x))
    assert_counts_exact("deit_ti_232", ir, module.deit_ti_232, 232)
    refused = {"extends": "deit_ti", "name": "deit_ti_232r", "img_size": 232}
    with pytest.raises(SpecError, match="16 does not divide the image size 232"):
        compile_data(refused, tmp_path)

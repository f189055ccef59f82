"""Pictures draw the same in every renderer: the SVG keeps to what browsers, librsvg and CairoSVG agree on,
its labels are ink (not the white blobs CairoSVG drew from `paint-order`), PNG and PDF are valid files of
the same drawing, and the same input gives the same bytes."""

from __future__ import annotations

import io
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from archgen import specs
from archgen.compiler import resolve
from archgen.pictures import diagram_svg, plot_svg, sweep_svg
from archgen.render import PNG_DPI, render
from archgen.sweep import Budget, sweep
from conftest import ROOT, ir_of

# one worker of `pytest -n` runs the module: its module-scoped fixture is built once
pytestmark = pytest.mark.xdist_group("pictures")

SVG = "{http://www.w3.org/2000/svg}"
# What pictures.py may write: shapes and plain text with presentation attributes.
TAGS = {"svg", "rect", "circle", "line", "polyline", "text", "title", "defs", "marker", "path"}
ATTRIBUTES = {
    "xmlns", "width", "height", "viewBox", "font-family", "font-size", "font-weight", "font-style", "class", "x",
    "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "points", "d", "fill", "stroke", "stroke-width",
    "stroke-dasharray", "stroke-linejoin", "text-anchor", "transform", "marker-end", "id", "markerWidth",
    "markerHeight", "refX", "refY", "orient",
}  # fmt: skip


@pytest.fixture(scope="module")
def pictures() -> dict[str, str]:
    """One of each picture: every spec's plot, a diagram, a sweep with both budgets."""
    loaded = specs.load(specs.find("deit_s"))
    result = sweep(loaded, ["stem.dim=192..576:64", "stages.blocks.depth=6..12:2"], budget=Budget(20e6, 4e9))
    return {
        "plot": plot_svg([ir_of(p) for p in sorted((ROOT / "specs").glob("*.yaml"))]),
        "diagram": diagram_svg(ir_of(ROOT / "specs" / "volo_d1.yaml")),
        "sweep": sweep_svg(result),
    }


def test_svg_keeps_to_what_every_renderer_draws_alike(pictures: dict[str, str]) -> None:
    for name, svg in pictures.items():
        root = ET.fromstring(svg)
        for el in root.iter():
            assert el.tag.removeprefix(SVG) in TAGS, (name, el.tag)
            assert set(el.attrib) <= ATTRIBUTES, (name, set(el.attrib) - ATTRIBUTES)
        assert not re.search(r"paint-order| style=|dominant-baseline|<style", svg), name


def test_budget_lines_are_labelled(pictures: dict[str, str]) -> None:
    root = ET.fromstring(pictures["sweep"])
    texts = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "budget"]
    assert texts == ["max MACs 4.00 G", "max params 20 M"]
    assert len([e for e in root.iter(f"{SVG}line") if e.get("class") == "budget"]) == 2


def _ink(png: bytes, svg: str, scale: float) -> list[tuple[str, float]]:
    """For each label: the share of dark pixels in its box (letters are ink, a blob or a halo is white)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    out = []
    for t in ET.fromstring(svg).iter(f"{SVG}text"):
        if t.get("class") != "label":
            continue
        size, x, y = float(t.get("font-size", "12")), float(t.get("x")), float(t.get("y"))
        width = len(t.text) * size * 0.55
        left = {"start": x, "middle": x - width / 2, "end": x - width}[t.get("text-anchor", "start")]
        box = [round(v * scale) for v in (left, y - 0.7 * size, left + width, y)]
        histogram = image.crop(box).histogram()  # of grey levels 0..255
        out.append((t.text, sum(histogram[:150]) / sum(histogram)))
    return out


def _check_ink(png: bytes, svg: str, scale: float, renderer: str) -> None:
    shares = _ink(png, svg, scale)
    assert len(shares) > 5
    blobs = [name for name, share in shares if share < 0.04]
    assert not blobs, f"{renderer}: labels drawn without ink (white blobs): {blobs[:5]}"
    assert all(share < 0.7 for _, share in shares), f"{renderer}: labels drawn as solid blocks"


def test_labels_are_ink_in_the_png_archgen_writes(pictures: dict[str, str]) -> None:
    for name in ("plot", "sweep"):
        _check_ink(render(pictures[name], "png"), pictures[name], PNG_DPI / 100, f"matplotlib ({name})")


def test_labels_are_ink_in_cairosvg(pictures: dict[str, str]) -> None:
    try:
        import cairosvg
    except (ImportError, OSError) as exc:  # not installed, or no libcairo on this machine
        pytest.skip(f"cairosvg unavailable: {exc}")
    for name in ("plot", "sweep"):
        _check_ink(cairosvg.svg2png(bytestring=pictures[name].encode()), pictures[name], 1, f"cairosvg ({name})")


def test_labels_are_ink_in_rsvg_convert(pictures: dict[str, str], tmp_path: Path) -> None:
    if shutil.which("rsvg-convert") is None:
        pytest.skip("rsvg-convert not installed (apt-get install librsvg2-bin)")
    for name in ("plot", "sweep"):
        png = subprocess.run(["rsvg-convert"], input=pictures[name].encode(), capture_output=True, check=True).stdout
        _check_ink(png, pictures[name], 1, f"rsvg-convert ({name})")


@pytest.mark.slow
def test_png_and_pdf_are_valid_and_deterministic(pictures: dict[str, str]) -> None:
    for name, svg in pictures.items():
        root = ET.fromstring(svg)
        width, height = int(root.get("width")), int(root.get("height"))
        png = render(svg, "png")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", name
        assert struct.unpack(">II", png[16:24]) == (width * PNG_DPI // 100, height * PNG_DPI // 100), name
        pdf = render(svg, "pdf")
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF"), name
        box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
        assert box and (float(box[1]), float(box[2])) == pytest.approx((width * 0.72, height * 0.72)), name  # points
        assert len(png) > 10_000 and len(pdf) > 5_000, name
        assert render(svg, "png") == png and render(svg, "pdf") == pdf, f"{name}: not deterministic"
    again = plot_svg([ir_of(p) for p in sorted((ROOT / "specs").glob("*.yaml"))])
    assert again == pictures["plot"]


@pytest.mark.slow
def test_cli_writes_png_and_pdf_by_suffix(tmp_path: Path) -> None:
    from test_cli_input import archgen

    for suffix, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF-")):
        proc = archgen("diagram", "cait_xxs24", "-o", f"d{suffix}", cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout == f"wrote d{suffix}\n", proc.stderr
        assert (tmp_path / f"d{suffix}").read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pdf", "d.png"]  # no temporary file left


def test_control_characters_and_dollars_in_a_title_still_draw(tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text('extends: deit_s\nname: odd\ntitle: "a\\x01b\\x1bc $x$ <&> $"\n', encoding="utf-8")
    svg = diagram_svg(resolve(specs.load(path)))
    title = next(ET.fromstring(svg).iter(f"{SVG}text")).text  # parses: valid XML
    assert title.startswith("a\\x01b\\x1bc $x$ <&> $ (odd)")
    assert render(svg, "png")[:4] == b"\x89PNG"  # `$` is not mathtext

"""The pictures' SVG drawn to PNG or PDF with matplotlib (imported here only: ``count`` and ``list`` never
load it), element by element, in the SVG's own pixel coordinates, so the three formats show one drawing.

Only the subset ``pictures.py`` writes is understood: ``rect``, ``circle``, ``line`` (with a marker at its
end), ``polyline`` and ``text`` (anchor, size, weight, style, a stroke for the halo, a rotation), with
presentation attributes; ``<title>`` tooltips have no place on paper and are left out. Text is set in
matplotlib's bundled DejaVu Sans, the font the SVG's label placement was measured for.
"""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from typing import Any

NS = "{http://www.w3.org/2000/svg}"
PT = 0.72  # one SVG pixel in points at 100 pixels per inch
PNG_DPI = 200  # twice the SVG's pixels: sharp on a high-density screen
FORMATS = ("png", "pdf")


def render(svg: str, fmt: str) -> bytes:
    """``svg`` (as ``pictures.py`` writes it) as PNG or PDF bytes; the same SVG gives the same bytes."""
    if fmt not in FORMATS:
        raise ValueError(f"cannot render {fmt}: choose {', '.join(FORMATS)}")
    from matplotlib.figure import Figure

    root = ET.fromstring(svg)
    width, height = float(root.get("width", "0")), float(root.get("height", "0"))
    base = float(root.get("font-size", "12"))
    with _rc():
        fig = Figure(figsize=(width / 100, height / 100), dpi=100)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)  # SVG's y runs down
        ax.set_axis_off()
        markers = {m.get("id"): m for m in root.iter(f"{NS}marker")}
        defined = {id(e) for d in root.iter(f"{NS}defs") for e in d.iter()}  # drawn where used, not here
        for z, el in enumerate(e for e in root.iter() if id(e) not in defined):
            _draw(ax, el, z, base, markers)
        out = io.BytesIO()
        if fmt == "png":
            fig.savefig(out, format="png", dpi=PNG_DPI, metadata={"Software": None})
        else:
            fig.savefig(out, format="pdf", metadata={"Creator": "archgen", "Producer": None, "CreationDate": None})
    return out.getvalue()


def _rc() -> Any:
    from matplotlib import rc_context

    return rc_context(
        {
            "font.family": "DejaVu Sans",
            "lines.scale_dashes": False,  # dash lengths in points, as SVG gives them in pixels
            "pdf.fonttype": 42,  # TrueType in the PDF: selectable, searchable text
            "svg.hashsalt": "archgen",
        }
    )


def _f(el: ET.Element, name: str, default: float = 0.0) -> float:
    value = el.get(name)
    return float(value) if value is not None else default


def _paint(value: str | None, default: str | None) -> str | None:
    """An SVG paint as matplotlib's colour (None: not painted). Artists are added without autoscaling: the
    axes already span the SVG's pixels."""
    value = default if value is None else value
    return None if value in (None, "none") else value


def _draw(ax: Any, el: ET.Element, z: int, base: float, markers: dict[str | None, ET.Element]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, FancyBboxPatch, Polygon

    tag = el.tag.removeprefix(NS)
    fill, stroke = _paint(el.get("fill"), "black"), _paint(el.get("stroke"), None)
    lw = _f(el, "stroke-width", 1.0) * PT
    common: dict[str, Any] = {"zorder": z, "clip_on": False}
    if tag == "rect":
        x, y, w, h, rx = (_f(el, k) for k in ("x", "y", "width", "height", "rx"))
        style = f"round,pad=0,rounding_size={rx}" if rx else "square,pad=0"
        ax.add_artist(
            FancyBboxPatch(
                (x, y), w, h, boxstyle=style, facecolor=fill or "none", edgecolor=stroke or "none", lw=lw, **common
            )
        )
    elif tag == "circle":
        patch = Circle((_f(el, "cx"), _f(el, "cy")), _f(el, "r"), facecolor=fill or "none", **common)
        patch.set(edgecolor=stroke or "none", lw=lw if stroke else 0)
        ax.add_artist(patch)
    elif tag in ("line", "polyline"):
        if tag == "line":
            xs, ys = [_f(el, "x1"), _f(el, "x2")], [_f(el, "y1"), _f(el, "y2")]
        else:
            pairs = [tuple(map(float, p.split(","))) for p in el.get("points", "").split()]
            xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        dashes = el.get("stroke-dasharray")
        style: Any = (0, tuple(float(d) * PT for d in dashes.split())) if dashes else "-"
        ax.add_artist(Line2D(xs, ys, color=stroke or "black", lw=lw, linestyle=style, solid_capstyle="butt", **common))
        end = re.fullmatch(r"url\(#(.+)\)", el.get("marker-end", ""))
        if end and end[1] in markers and len(xs) > 1:
            points, colour = _marker(markers[end[1]], xs[-2:], ys[-2:], lw / PT)
            ax.add_artist(Polygon(points, closed=True, facecolor=colour, edgecolor="none", **common))
    elif tag == "text":
        _text(ax, el, fill, stroke, lw, base, common)


def _marker(marker: ET.Element, xs: list[float], ys: list[float], stroke_px: float) -> tuple[list[Any], str]:
    """The marker's path (straight segments) placed at the line's end, turned along it, in stroke widths."""
    path = marker.find(f"{NS}path")
    assert path is not None, "a marker is a path"
    numbers = [float(v) for v in re.findall(r"-?[\d.]+", path.get("d", ""))]
    ref_x, ref_y = _f(marker, "refX"), _f(marker, "refY")
    angle = math.atan2(ys[1] - ys[0], xs[1] - xs[0])
    c, s = math.cos(angle), math.sin(angle)
    points = []
    for px, py in zip(numbers[::2], numbers[1::2], strict=True):
        dx, dy = (px - ref_x) * stroke_px, (py - ref_y) * stroke_px
        points.append((xs[1] + dx * c - dy * s, ys[1] + dx * s + dy * c))
    return points, path.get("fill", "black")


def _text(
    ax: Any, el: ET.Element, fill: str | None, stroke: str | None, lw: float, base: float, common: dict[str, Any]
) -> None:
    from matplotlib import patheffects

    content = el.text or ""
    if not content:
        return
    x, y = _f(el, "x"), _f(el, "y")
    rotation = 0.0
    turn = re.fullmatch(r"rotate\(\s*(-?[\d.]+)(?:[ ,]+(-?[\d.]+)[ ,]+(-?[\d.]+))?\s*\)", el.get("transform", ""))
    if turn:
        angle = float(turn[1])
        cx, cy = (float(turn[2]), float(turn[3])) if turn[2] else (0.0, 0.0)
        a = math.radians(angle)
        x, y = (
            cx + (x - cx) * math.cos(a) - (y - cy) * math.sin(a),
            cy + (x - cx) * math.sin(a) + (y - cy) * math.cos(a),
        )
        rotation = -angle  # SVG turns clockwise (y down), matplotlib anticlockwise
    effects = (
        [patheffects.Stroke(linewidth=lw, foreground=stroke, joinstyle="round"), patheffects.Normal()] if stroke else []
    )
    ax.text(
        x,
        y,
        content,
        ha={"start": "left", "middle": "center", "end": "right"}[el.get("text-anchor", "start")],
        va="baseline",
        fontsize=_f(el, "font-size", base) * PT,
        fontweight=el.get("font-weight", "normal"),
        fontstyle=el.get("font-style", "normal"),
        color=fill or "none",
        rotation=rotation,
        rotation_mode="anchor",
        path_effects=effects,
        parse_math=False,  # a `$` in a spec's title is a dollar sign
        **common,
    )

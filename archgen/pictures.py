"""Pictures a person would rather look at than a table: SVG written by hand, in the subset of SVG every
renderer draws alike (browsers, librsvg, CairoSVG; ``render.py`` draws the same elements to PNG and PDF):
shapes and plain ``<text>`` with presentation attributes, no CSS, no ``paint-order``, no ``dominant-baseline``.
A label's white halo is a second ``<text>`` drawn under it (``paint-order: stroke`` is ignored by CairoSVG,
which then paints the stroke over the letters: a white blob).

``plot_svg``: params vs MACs of every spec (log-log), each published number joined to its spec's computed
point; names placed where they overlap no other name, marker or line (leader lines where set apart).
``diagram_svg``: one spec's stage/block graph with token grids, widths, params and MACs per stage, and where
the prefix tokens and the position table enter.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from archgen.compiler import IR, Walked
from archgen.counting import Count
from archgen.fidelity import checks
from archgen.geometry import size_text
from archgen.printable import xml_text as escape
from archgen.sweep import Sweep

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _svg(width: int, height: int, body: list[str]) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
    )
    return "\n".join([head, f'<rect width="{width}" height="{height}" fill="white"/>', *body, "</svg>"]) + "\n"


# Text metrics for layout without a font engine: an upper estimate of the advance of one character of the
# default sans-serif (DejaVu Sans averages about 0.55 em over these labels; digits are 0.64 em).
CHAR_EM = 0.62
LABEL_PX = 11


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box, margin: float = 0.0) -> bool:
        return not (
            self.x1 + margin <= other.x0
            or other.x1 + margin <= self.x0
            or self.y1 + margin <= other.y0
            or other.y1 + margin <= self.y0
        )

    def inside(self, other: Box) -> bool:
        return other.x0 <= self.x0 and self.x1 <= other.x1 and other.y0 <= self.y0 and self.y1 <= other.y1

    def nearest(self, x: float, y: float) -> tuple[float, float]:
        return min(max(x, self.x0), self.x1), min(max(y, self.y0), self.y1)

    def crosses(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        """Does the segment a-b pass through the box (Liang-Barsky clipping)?"""
        (x0, y0), (x1, y1) = a, b
        dx, dy = x1 - x0, y1 - y0
        lo, hi = 0.0, 1.0
        for p, q in ((-dx, x0 - self.x0), (dx, self.x1 - x0), (-dy, y0 - self.y0), (dy, self.y1 - y0)):
            if p == 0:
                if q < 0:
                    return False
                continue
            t = q / p
            if p < 0:
                lo = max(lo, t)
            else:
                hi = min(hi, t)
            if lo > hi:
                return False
        return True


def text_box(x: float, y: float, text: str, size: float = LABEL_PX, anchor: str = "start") -> Box:
    """Estimated extent of ``<text x y>`` (y is the baseline): ascent 0.8 em above, descent 0.25 em below."""
    width = len(text) * size * CHAR_EM
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return Box(left, y - 0.8 * size, left + width, y + 0.25 * size)


LINE = 1.2  # line pitch of a multi-line label, in em


@dataclass(frozen=True)
class Label:
    lines: tuple[str, ...]  # one name per line (points that coincide share a label)
    x: float  # text anchor point
    y: float  # baseline of the first line
    anchor: str
    box: Box
    leader: tuple[float, float, float, float] | None  # from the marker's edge to the label, when set apart


def _segments_cross(
    a: tuple[float, float], b: tuple[float, float], c: tuple[float, float], d: tuple[float, float]
) -> bool:
    def side(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0


def place_labels(
    points: list[tuple[tuple[str, ...], float, float]],
    markers: list[tuple[float, float, float]],
    segments: list[tuple[tuple[float, float], tuple[float, float]]],
    bounds: Box,
    size: float = LABEL_PX,
) -> list[Label]:
    """A label for each (lines, x, y) point that overlaps no other label, no marker (x, y, r) and no
    segment, inside ``bounds``: candidate spots on rings of growing radius around the point, the nearest
    free one wins. A label set apart gets a leader line; leaders cross no label, no marker and no other
    leader where any spot allows it. Crowded points are placed first, while there is room next to them."""
    marks = [Box(x - r - 1.5, y - r - 1.5, x + r + 1.5, y + r + 1.5) for x, y, r in markers]
    placed: list[Label] = []

    def crowd(p: tuple[tuple[str, ...], float, float]) -> int:
        return sum(math.hypot(p[1] - q[1], p[2] - q[2]) < 60 for q in points)

    def free(label: Label, level: int, own: list[Box]) -> bool:
        """2: nothing crossed; 1: leaders may cross; 0 (a last resort no chart here needs): inside the plot."""
        if not label.box.inside(bounds):
            return False
        if level == 0:
            return True
        if any(label.box.overlaps(m) for m in marks):
            return False
        if any(label.box.overlaps(other.box, 3) for other in placed):
            return False
        if any(label.box.crosses(a, b) for a, b in segments):
            return False
        if level == 1:
            return True
        if any(o.leader is not None and label.box.crosses(o.leader[:2], o.leader[2:]) for o in placed):
            return False
        if label.leader is None:
            return True
        a, b = label.leader[:2], label.leader[2:]
        return not (
            any(o.box.crosses(a, b) for o in placed)
            or any(m.crosses(a, b) for m in marks if m not in own)
            or any(o.leader is not None and _segments_cross(a, b, o.leader[:2], o.leader[2:]) for o in placed)
        )

    order = sorted(range(len(points)), key=lambda i: (-crowd(points[i]), points[i][1]))
    out: dict[int, Label] = {}
    for i in order:
        lines, px, py = points[i]
        own = [m for m, (mx, my, _r) in zip(marks, markers, strict=True) if math.hypot(mx - px, my - py) < 1]
        spots = [
            _candidate(lines, px, py, radius, math.radians(angle), size)
            for radius in (7, 10, 14, 19, 25, 32, 40, 50, 62, 76, 92, 110, 130, 155, 185, 220, 260, 310, 370, 440)
            for angle in (*range(30, 360, 15), *range(0, 30, 15))  # up-right first, then round
        ]
        best = next((label for level in (2, 1, 0) for label in spots if free(label, level, own)), spots[0])
        placed.append(best)
        out[i] = best
    return [out[i] for i in range(len(points))]


def _candidate(lines: tuple[str, ...], px: float, py: float, radius: float, angle: float, size: float) -> Label:
    ax, ay = px + radius * math.cos(angle), py - radius * math.sin(angle)
    c, sn = math.cos(angle), math.sin(angle)
    width = max(len(t) for t in lines) * size * CHAR_EM
    height = (len(lines) - 1) * LINE * size + 1.05 * size
    if c > 0.38:  # to the right: the label starts there, vertically centred
        anchor, left, top = "start", ax, ay - height / 2
    elif c < -0.38:
        anchor, left, top = "end", ax - width, ay - height / 2
    elif sn > 0:  # above: centred, its bottom there
        anchor, left, top = "middle", ax - width / 2, ay - height
    else:
        anchor, left, top = "middle", ax - width / 2, ay
    box = Box(left, top, left + width, top + height)
    x = {"start": left, "end": left + width, "middle": left + width / 2}[anchor]
    leader = None
    lx, ly = box.nearest(px, py)
    d = math.hypot(lx - px, ly - py)
    if d > 9:
        sx, sy = px + (lx - px) * 5 / d, py + (ly - py) * 5 / d  # from the marker's edge
        leader = (round(sx, 1), round(sy, 1), round(lx, 1), round(ly, 1))
    return Label(lines, round(x, 1), round(top + 0.8 * size, 1), anchor, box, leader)


def _halo_text(
    x: float, y: float, anchor: str, text: str, fill: str, extra: str = "", kind: str = "label"
) -> list[str]:
    """A label over a white halo (two texts: the halo first), so it reads on lines and grid alike."""
    at = f'x="{x}" y="{y}" text-anchor="{anchor}" font-size="{LABEL_PX}"{extra}'
    return [
        f'<text class="halo" {at} fill="white" stroke="white" stroke-width="3" stroke-linejoin="round">'
        f"{escape(text)}</text>",
        f'<text class="{kind}" {at} fill="{fill}">{escape(text)}</text>',
    ]


def _dark(hex_colour: str, keep: float = 0.62) -> str:
    """The colour darkened for text (the palette's orange and pink are too light to read at 11 px)."""
    rgb = [round(int(hex_colour[i : i + 2], 16) * keep) for i in (1, 3, 5)]
    return "#" + "".join(f"{v:02x}" for v in rgb)


def _ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 times powers of ten between 10**lo and 10**hi."""
    out = []
    for exp in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            v = m * 10.0**exp
            if lo <= math.log10(v) <= hi:
                out.append(v)
    return out


def _log_axes(
    area: Box, xs: list[float], ys: list[float]
) -> tuple[Callable[[float, float], tuple[float, float]], list[str]]:
    """Log-log axes over the data (MACs across in G, params up in M): the point mapping and the grid."""
    x0, x1 = math.log10(min(xs)) - 0.08, math.log10(max(xs)) + 0.08
    y0, y1 = math.log10(min(ys)) - 0.08, math.log10(max(ys)) + 0.08

    def at(macs: float, params: float) -> tuple[float, float]:
        x = area.x0 + (math.log10(macs) - x0) / (x1 - x0) * (area.x1 - area.x0)
        y = area.y1 - (math.log10(params) - y0) / (y1 - y0) * (area.y1 - area.y0)
        return round(x, 1), round(y, 1)

    grid = []
    for v in _ticks(x0, x1):
        x, _ = at(v, 10**y0)
        major = math.log10(v).is_integer()
        grid.append(f'<line x1="{x}" y1="{area.y0}" x2="{x}" y2="{area.y1}" stroke="{"#ccc" if major else "#eee"}"/>')
        grid.append(f'<text x="{x}" y="{area.y1 + 16}" text-anchor="middle">{v / 1e9:g}</text>')
    for v in _ticks(y0, y1):
        _, y = at(10**x0, v)
        major = math.log10(v).is_integer()
        grid.append(f'<line x1="{area.x0}" y1="{y}" x2="{area.x1}" y2="{y}" stroke="{"#ccc" if major else "#eee"}"/>')
        grid.append(f'<text x="{area.x0 - 6}" y="{y + 4}" text-anchor="end">{v / 1e6:g}</text>')
    return at, grid


def _frame(area: Box, title: str) -> list[str]:
    """Title, border and axis names of a params-vs-MACs chart."""
    mid_x, mid_y = (area.x0 + area.x1) / 2, (area.y0 + area.y1) / 2
    return [
        f'<text x="{mid_x}" y="26" text-anchor="middle" font-size="16">{escape(title)}</text>',
        f'<rect x="{area.x0}" y="{area.y0}" width="{area.x1 - area.x0}" height="{area.y1 - area.y0}" '
        'fill="none" stroke="black"/>',
        f'<text x="{mid_x}" y="{area.y1 + 40}" text-anchor="middle">MACs (G)</text>',
        f'<text x="22" y="{mid_y}" text-anchor="middle" transform="rotate(-90 22 {mid_y})">params (M)</text>',
    ]


def plot_svg(irs: list[IR], yours: set[str] | frozenset[str] = frozenset()) -> str:
    """Params vs MACs at each spec's default resolution (log-log), one colour per family: each spec's
    computed point (filled), each published number at that resolution (hollow, moved along its own axis:
    a MACs figure sideways, a params figure up or down) joined to its spec's point by a line, and every
    spec's name placed where it overlaps nothing, with a leader line when set apart; the names in ``yours``
    (the user's own specs) in bold."""
    grow = max(1.0, math.sqrt(len(irs) / 30))  # a larger library gets a larger canvas, not denser labels
    width, height = round(1400 * grow), round(1000 * grow)
    area = Box(80, 50, width - 220, height - 70)  # the plot; the legend sits to its right
    if not irs:
        return _svg(width, height, _frame(area, "no spec to plot"))
    specs = []
    for ir in irs:
        size = ir.spec.img_size
        total = ir.count(size)
        specs.append((ir.spec.name, ir.spec.family, total.params, total.macs, checks(ir, size)))
    xs = [m for *_, m, _ in specs] + [c.entry.value for *_, cs in specs for c in cs if c.entry.quantity == "macs"]
    ys = [p for _, _, p, _, _ in specs] + [
        c.entry.value for *_, cs in specs for c in cs if c.entry.quantity == "params"
    ]
    at, grid = _log_axes(area, xs, ys)
    families = sorted({f for _, f, *_ in specs})
    colour = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(families)}
    body: list[str] = []
    links, hollow, filled, points = [], [], [], []
    markers: list[tuple[float, float, float]] = []
    segments = []
    for name, family, params, macs, found in specs:
        c = colour[family]
        x, y = at(macs, params)
        for chk in found:
            e = chk.entry
            px, py = at(e.value, params) if e.quantity == "macs" else at(macs, e.value)
            conv = "" if e.convention == "macs" else f", {e.convention} convention"
            links.append(f'<line class="link" x1="{x}" y1="{y}" x2="{px}" y2="{py}" stroke="{c}" stroke-width="1.2"/>')
            hollow.append(
                f'<circle class="published" cx="{px}" cy="{py}" r="6" fill="none" stroke="{c}" stroke-width="1.5">'
                f"<title>{escape(name)}: published {e.quantity} {escape(e.printed)} ({escape(e.source)}{conv}), "
                f"ours {chk.computed:,} ({chk.rel_err:+.1%})</title></circle>"
            )
            markers.append((px, py, 6.75))
            if (px, py) != (x, y):
                segments.append(((x, y), (px, py)))
        filled.append(
            f'<circle class="computed" cx="{x}" cy="{y}" r="4" fill="{c}" stroke="white" stroke-width="0.8">'
            f"<title>{escape(name)}: {params:,} params, {macs:,} MACs</title></circle>"
        )
        markers.append((x, y, 4.4))
        points.append((name, x, y))
    family_of = {name: family for name, family, *_ in specs}
    groups: list[tuple[list[str], float, float]] = []  # specs drawn on the same spot share one label
    for name, x, y in points:
        near = next((g for g in groups if abs(g[1] - x) < 2.5 and abs(g[2] - y) < 2.5), None)
        if near is None:
            groups.append(([name], x, y))
        else:
            near[0].append(name)
    bounds = Box(area.x0 + 2, area.y0 + 2, area.x1 - 2, area.y1 - 2)
    labels = place_labels([(tuple(sorted(n)), x, y) for n, x, y in groups], markers, segments, bounds)
    for label in labels:
        if label.leader is not None:
            x1_, y1_, x2_, y2_ = label.leader
            links.append(
                f'<line class="leader" x1="{x1_}" y1="{y1_}" x2="{x2_}" y2="{y2_}" stroke="#777" stroke-width="0.7"/>'
            )
        for k, text in enumerate(label.lines):
            y = round(label.y + k * LINE * LABEL_PX, 1)
            bold = ' font-weight="bold"' if text in yours else ""
            body += _halo_text(label.x, y, label.anchor, text, _dark(colour[family_of[text]]), bold)
    head = _frame(area, "Parameters vs MACs at each spec's default resolution (log-log)")
    legend = []
    lx = area.x1 + 24
    for i, family in enumerate(families):
        y = area.y0 + 10 + 20 * i
        legend.append(f'<circle class="legend" cx="{lx}" cy="{y}" r="5" fill="{colour[family]}"/>')
        legend.append(f'<text x="{lx + 12}" y="{y + 4}">{escape(family)}</text>')
    y = area.y0 + 10 + 20 * len(families) + 10
    legend += [
        f'<circle class="legend" cx="{lx}" cy="{y}" r="4" fill="#555"/>',
        f'<text x="{lx + 12}" y="{y + 4}">computed (exact)</text>',
        f'<line class="legend" x1="{lx}" y1="{y + 20}" x2="{lx + 30}" y2="{y + 20}" stroke="#555" stroke-width="1.2"/>',
        f'<circle class="legend" cx="{lx + 30}" cy="{y + 20}" r="6" fill="none" stroke="#555" stroke-width="1.5"/>',
        f'<text x="{lx + 42}" y="{y + 24}">published,</text>',
        f'<text x="{lx + 42}" y="{y + 38}">joined to its spec</text>',
    ]
    if yours:
        legend.append(f'<text x="{lx}" y="{y + 62}" font-weight="bold">bold: your specs</text>')
    return _svg(width, height, [*grid, *head, *links, *hollow, *filled, *body, *legend])


FRONTIER = "#d62728"
MAX_FRONTIER_LABELS = 40


def sweep_svg(result: Sweep) -> str:
    """A sweep's valid variants, params vs MACs (log-log): those within the budgets dark, those over them
    light, the Pareto frontier red and joined in order of MACs, each frontier point labelled with its row
    number (``archgen sweep --emit ROW``), the budgets as dashed lines."""
    width, height = 1200, 860
    area = Box(80, 50, 1000, 790)
    valid = result.valid
    budget = result.budget
    if not valid:
        return _svg(width, height, _frame(area, f"sweep of {result.spec}: no valid combination"))
    xs = [float(r.macs) for r in valid] + ([float(budget.macs)] if budget.macs else [])
    ys = [float(r.params) for r in valid] + ([float(budget.params)] if budget.params else [])
    at, grid = _log_axes(area, xs, ys)
    over, inside = [], []
    marks: list[tuple[float, float, float]] = []  # what labels keep clear of: the frontier (a sweep has 1000s of dots)
    for r in valid:
        x, y = at(r.macs, r.params)
        tip = f"row {r.index}: {r.params:,} params, {r.macs:,} MACs" + (
            f", {r.memory_bytes:,} bytes" if r.memory_bytes is not None else ""
        )
        if not r.within:
            over.append(f'<circle class="over" cx="{x}" cy="{y}" r="2.5" fill="#ccc"><title>{tip}</title></circle>')
        elif not r.frontier:
            inside.append(f'<circle class="inside" cx="{x}" cy="{y}" r="2.5" fill="#555"><title>{tip}</title></circle>')
    front = sorted((r for r in valid if r.frontier), key=lambda r: (r.macs, -r.params))
    plane, best = [], -1  # the frontier in this picture's two dimensions, joined by a line
    for r in front:
        if r.params > best:
            plane.append(r)
            best = r.params
    spots = [at(r.macs, r.params) for r in plane]
    line = " ".join(f"{x},{y}" for x, y in spots)
    drawn = [f'<polyline class="frontier-line" points="{line}" fill="none" stroke="{FRONTIER}" stroke-width="1.2"/>']
    for r in front:
        x, y = at(r.macs, r.params)
        fill = FRONTIER if r in plane else "white"  # hollow: on the frontier through its smaller memory
        drawn.append(
            f'<circle class="frontier" cx="{x}" cy="{y}" r="4" fill="{fill}" stroke="{FRONTIER}" stroke-width="1.2">'
            f"<title>row {r.index}: {r.params:,} params, {r.macs:,} MACs"
            + (f", {r.memory_bytes:,} bytes" if r.memory_bytes is not None else "")
            + " (frontier)</title></circle>"
        )
        marks.append((x, y, 4.4))
    limits = []  # each budget a dashed line, named where it meets the frame (the top; the right)
    if budget.macs:
        x, _ = at(budget.macs, ys[0])
        limits.append(f'<line class="budget" x1="{x}" y1="{area.y0}" x2="{x}" y2="{area.y1}" stroke="#333" '
                      f'stroke-dasharray="6 4"><title>--max-macs {budget.macs:,}</title></line>')  # fmt: skip
        limits += _halo_text(x - 4, area.y0 + 14, "end", f"max MACs {macs_text(budget.macs)}", "#333", kind="budget")
    if budget.params:
        _, y = at(xs[0], budget.params)
        limits.append(f'<line class="budget" x1="{area.x0}" y1="{y}" x2="{area.x1}" y2="{y}" stroke="#333" '
                      f'stroke-dasharray="6 4"><title>--max-params {budget.params:,}</title></line>')  # fmt: skip
        limits += _halo_text(
            area.x1 - 4, y - 5, "end", f"max params {budget.params / 1e6:,.3g} M", "#333", kind="budget"
        )
    segments = list(itertools.pairwise(spots))
    bounds = Box(area.x0 + 2, area.y0 + 2, area.x1 - 2, area.y1 - 2)
    step = max(1, math.ceil(len(plane) / MAX_FRONTIER_LABELS))  # a long frontier: every step-th point named
    named = [((f"#{r.index}",), x, y) for i, (r, (x, y)) in enumerate(zip(plane, spots, strict=True)) if i % step == 0]
    labels = []
    for label in place_labels(named, marks, segments, bounds):
        if label.leader is not None:
            x1_, y1_, x2_, y2_ = label.leader
            labels.append(f'<line class="leader" x1="{x1_}" y1="{y1_}" x2="{x2_}" y2="{y2_}" stroke="#777" '
                          'stroke-width="0.7"/>')  # fmt: skip
        labels += _halo_text(label.x, label.y, label.anchor, label.lines[0], _dark(FRONTIER))
    axes = ", ".join(a.name for a in result.axes if len(a.values) > 1)
    title = f"sweep of {result.spec} @{size_text(result.img_size) if result.img_size else 'img_size'} over {axes}"
    lx, ly = area.x1 + 20, area.y0 + 10
    legend = [
        f'<circle cx="{lx}" cy="{ly}" r="4" fill="{FRONTIER}"/>',
        f'<text x="{lx + 12}" y="{ly + 4}">Pareto frontier</text>',
        f'<text x="{lx + 12}" y="{ly + 18}">(most params for</text>',
        f'<text x="{lx + 12}" y="{ly + 32}">the MACs)</text>',
    ]
    ly += 52
    if result.memory:
        legend += [
            f'<circle cx="{lx}" cy="{ly}" r="4" fill="white" stroke="{FRONTIER}" stroke-width="1.2"/>',
            f'<text x="{lx + 12}" y="{ly + 4}">frontier through</text>',
            f'<text x="{lx + 12}" y="{ly + 18}">less memory</text>',
        ]
        ly += 38
    legend += [
        f'<circle cx="{lx}" cy="{ly}" r="2.5" fill="#555"/>',
        f'<text x="{lx + 12}" y="{ly + 4}">within budget</text>',
        f'<circle cx="{lx}" cy="{ly + 20}" r="2.5" fill="#ccc"/>',
        f'<text x="{lx + 12}" y="{ly + 24}">over budget</text>',
        f'<text x="{lx}" y="{ly + 48}">{len(result.rows):,} combinations,</text>',
        f'<text x="{lx}" y="{ly + 62}">{len(result.invalid):,} invalid</text>',
    ]
    if budget.memory:  # not an axis of this picture: named in the legend
        legend.append(f'<text x="{lx}" y="{ly + 86}">max memory {budget.memory / 2**20:,.0f} MiB</text>')
    return _svg(width, height, [*grid, *_frame(area, title), *limits, *over, *inside, *drawn, *labels, *legend])


def macs_text(macs: int) -> str:
    """MACs for a diagram: three significant digits, in G from 10 M up (``1.20 G``, ``0.0578 G``), else in
    M (``1.26 M``)."""
    if not macs:
        return "0"
    value, unit = (macs / 1e9, "G") if macs >= 1e7 else (macs / 1e6, "M")
    digits = 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else None
    return f"{value:.{digits}f} {unit}" if digits is not None else f"{value:.3g} {unit}"


def counts_text(params: int, macs: int) -> str:
    return f"params {params:,} · MACs {macs_text(macs)}"


@dataclass(frozen=True)
class _Entry:
    """A step the diagram shows on the arrow between two boxes rather than as a box."""

    text: str
    kind: str  # tokens, pos_embed, layout or other
    tip: str


def _entry(w: Walked, count: Count) -> _Entry:
    slot = w.kind.slot
    tip = f"{count.params:,} params, {count.macs:,} MACs"
    if slot == "tokens":  # prefix tokens join the sequence
        names = [c.name for c in count.children]
        n = w.s_out.prefix - w.s_in.prefix
        verb = "joins" if len(names) == 1 else "join"
        text = f"+ {', '.join(names)} {verb} ({n} token{'s' if n > 1 else ''}): {count.params:,} params"
        return _Entry(text, slot, f"{tip}; tokens {w.s_out.tokens()} after")
    if slot == "pos_embed":
        fields = w.kind.model_dump(exclude={"kind", "before"}, exclude_none=True)
        desc = ", ".join([w.kind.label, *(f"{k} {v}" for k, v in fields.items())])
        amount = f"{count.params:,} params" if count.params else "computed, no params"
        return _Entry(f"+ {count.name or 'pos_embed'} ({desc}): {amount}", slot, tip)
    if slot == "layout":
        layout = {"seq": "a sequence", "grid": "a grid"}.get(w.s_out.layout, w.s_out.layout)
        return _Entry(f"tokens as {layout}: {w.s_out.tokens()}", slot, f"{w.s_in.shape()} -> {w.s_out.shape()}")
    name = count.name or w.kind.label
    amount = counts_text(count.params, count.macs) if count.macs else f"{count.params:,} params"
    return _Entry(f"{name} ({w.kind.label}): {amount}", "other", tip)


ENTRY_STYLE = {  # fill, stroke of the annotation's pill
    "tokens": ("#fff3e0", "#e08a00"),
    "pos_embed": ("#eaf6ea", "#2e8b2e"),
    "layout": (None, "#999"),
    "other": ("#f2f2f2", "#888"),
}


def diagram_svg(ir: IR) -> str:
    """Boxes top to bottom: the input, the stem, each stage and the head, each with its kind, depth, width,
    heads, the token grid it outputs at the default resolution, and its params and MACs. On the arrows
    between them, where they happen: prefix tokens joining, the position table being added, layout
    changes and the final norm, each with its own count."""
    size = ir.spec.img_size
    total = ir.count(size)
    boxes: list[tuple[list[str], list[_Entry], str]] = [
        ([f"input: image {ir.model.in_chans}x{size[0]}x{size[1]}"], [], "")
    ]
    pending: list[_Entry] = []
    for w in ir.walk(size):
        count = w.kind.count(w.s_in, ir.model)
        row = w.kind.row(w.s_in, ir.model)
        if row is None:
            pending.append(_entry(w, count))
            continue
        name = str(getattr(w.kind, "key", w.path[0]))
        if w.container is not None:  # a stage that continues another's container: where its blocks sit
            name = f"{name} ({w.container}.{w.start}-{w.start + w.kind.num_blocks() - 1})"
        elif count.name and count.name != name:
            name = f"{name} ({count.name})"
        depth = f" x{row.depth}" if row.depth != "-" else ""
        heads = f", {row.heads} heads" if row.heads != "-" else ""
        lines = [
            f"{name}: {row.kind}{depth}",
            f"dim {w.s_out.dim}{heads}; tokens {w.s_out.tokens()}",
            counts_text(count.params, count.macs),
        ]
        boxes.append((lines, pending, f"{count.params:,} params, {count.macs:,} MACs"))
        pending = []
    final = ir.final(size)
    head = ir.head.row(final, ir.model)
    hc = ir.head.count(final, ir.model, ir.fc_norm)
    lines = [f"head: {head.kind}", f"{final.dim} -> {ir.model.num_classes} classes", counts_text(hc.params, hc.macs)]
    boxes.append((lines, pending, f"{hc.params:,} params, {hc.macs:,} MACs"))

    pad, box_w, line_h, gap, step = 30, 560, 17, 24, 24
    title = f"{ir.spec.title} ({ir.spec.name}) @{size}"
    centre = pad + box_w / 2
    body = [
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="6" refY="4" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#35a"/></marker></defs>',
        f'<text x="{pad}" y="{pad}" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="{pad}" y="{pad + 20}" fill="#333">total: {escape(counts_text(total.params, total.macs))}</text>',
    ]
    y = pad + 36
    widest = max(pad + box_w, pad + len(title) * 15 * CHAR_EM)  # bold 15 px: about as wide as CHAR_EM says
    prev_bottom = None
    for lines, entries, tip in boxes:
        if prev_bottom is not None:
            y += gap + step * len(entries)
            for k, e in enumerate(entries):
                ey = prev_bottom + gap / 2 + step * (k + 0.5) + 2
                fill, stroke = ENTRY_STYLE[e.kind]
                tx = centre + 22
                width = len(e.text) * 11 * CHAR_EM + 12
                widest = max(widest, tx + width)
                if fill is None:  # a layout change: a note beside the arrow
                    body.append(
                        f'<text class="entry" x="{tx}" y="{ey + 4}" font-size="11" font-style="italic" '
                        f'fill="#666">{escape(e.text)}<title>{escape(e.tip)}</title></text>'
                    )
                    continue
                body.append(f'<line x1="{centre}" y1="{ey}" x2="{tx}" y2="{ey}" stroke="{stroke}"/>')
                body.append(f'<circle cx="{centre}" cy="{ey}" r="4" fill="{stroke}"/>')
                body.append(
                    f'<rect x="{tx}" y="{ey - 9}" width="{width:.0f}" height="18" rx="9" fill="{fill}" '
                    f'stroke="{stroke}"/>'
                )
                body.append(
                    f'<text class="entry" x="{tx + 6}" y="{ey + 4}" font-size="11">{escape(e.text)}'
                    f"<title>{escape(e.tip)}</title></text>"
                )
            arrow = f'x1="{centre}" y1="{prev_bottom}" x2="{centre}" y2="{y}" stroke="#35a" marker-end="url(#arrow)"'
            body.insert(3, f"<line {arrow}/>")  # under the annotations' dots
        height = 12 + line_h * len(lines)
        body.append(
            f'<rect x="{pad}" y="{y}" width="{box_w}" height="{height}" rx="6" fill="#eef3fb" stroke="#35a">'
            + (f"<title>{escape(tip)}</title>" if tip else "")
            + "</rect>"
        )
        for k, text in enumerate(lines):
            weight = ' font-weight="bold"' if k == 0 else ""
            colour = ' fill="#1d3f73"' if k == 2 else ""
            body.append(f'<text x="{pad + 10}" y="{y + 19 + line_h * k}"{weight}{colour}>{escape(text)}</text>')
        prev_bottom = y + height
        y = prev_bottom
    return _svg(math.ceil(widest + pad), math.ceil(y + pad), body)

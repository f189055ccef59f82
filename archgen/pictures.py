"""Pictures a person would rather look at than a table: SVG written by hand (no plotting dependency).

``plot_svg``: params vs MACs of every spec (log-log), published points beside the computed ones.
``diagram_svg``: one spec's stage/block graph with token grids and widths.
"""

from __future__ import annotations

import math
from html import escape

from archgen.compiler import IR
from archgen.fidelity import checks

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _svg(width: int, height: int, body: list[str]) -> str:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
    )
    return "\n".join([head, f'<rect width="{width}" height="{height}" fill="white"/>', *body, "</svg>"]) + "\n"


def plot_svg(irs: list[IR]) -> str:
    """Computed (filled) and published (hollow, joined to their spec) points, params vs MACs at each
    spec's default resolution; one colour per family."""
    width, height, pad = 900, 640, 70
    points = []
    for ir in irs:
        size = ir.spec.img_size
        total = ir.count(size)
        pub = {c.entry.quantity: c.entry.value for c in checks(ir, size)}
        points.append((ir.spec.name, ir.spec.family, total.params, total.macs, pub))
    xs = [p[3] for p in points] + [p[4].get("macs", p[3]) for p in points]
    ys = [p[2] for p in points] + [p[4].get("params", p[2]) for p in points]
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y0, y1 = math.log10(min(ys)) - 0.1, math.log10(max(ys)) + 0.1

    def at(macs: float, params: float) -> tuple[float, float]:
        x = pad + (math.log10(macs) - x0) / (x1 - x0) * (width - 2 * pad)
        y = height - pad - (math.log10(params) - y0) / (y1 - y0) * (height - 2 * pad)
        return round(x, 1), round(y, 1)

    families = sorted({p[1] for p in points})
    colour = {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(families)}
    body = [
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16">'
        "Parameters vs MACs at each spec's default resolution (log-log)</text>",
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 20}" text-anchor="middle">MACs (G)</text>',
        f'<text x="18" y="{height / 2}" text-anchor="middle" transform="rotate(-90 18 {height / 2})">params (M)</text>',
    ]
    for exp in range(math.floor(x0), math.ceil(x1) + 1):
        if x0 <= exp <= x1:
            x, _ = at(10**exp, 10**y0)
            body.append(f'<text x="{x}" y="{height - pad + 16}" text-anchor="middle">{10**exp / 1e9:g}</text>')
    for exp in range(math.floor(y0), math.ceil(y1) + 1):
        if y0 <= exp <= y1:
            _, y = at(10**x0, 10**exp)
            body.append(f'<text x="{pad - 6}" y="{y + 4}" text-anchor="end">{10**exp / 1e6:g}</text>')
    for name, family, params, macs, pub in points:
        x, y = at(macs, params)
        c = colour[family]
        if pub:
            px, py = at(pub.get("macs", macs), pub.get("params", params))
            body.append(f'<line x1="{x}" y1="{y}" x2="{px}" y2="{py}" stroke="{c}" stroke-dasharray="2,2"/>')
            body.append(
                f'<circle cx="{px}" cy="{py}" r="5" fill="none" stroke="{c}"><title>{escape(name)} '
                "published</title></circle>"
            )
        body.append(
            f'<circle cx="{x}" cy="{y}" r="4" fill="{c}"><title>{escape(name)}: {params:,} params, '
            f"{macs:,} MACs</title></circle>"
        )
        body.append(f'<text x="{x + 6}" y="{y - 6}" font-size="10">{escape(name)}</text>')
    for i, family in enumerate(families):
        y = pad + 18 * i
        body.append(f'<circle cx="{width - pad - 90}" cy="{y}" r="5" fill="{colour[family]}"/>')
        body.append(f'<text x="{width - pad - 80}" y="{y + 4}">{escape(family)}</text>')
    y = pad + 18 * len(families)
    body.append(f'<circle cx="{width - pad - 90}" cy="{y}" r="5" fill="none" stroke="black"/>')
    body.append(f'<text x="{width - pad - 80}" y="{y + 4}">published</text>')
    return _svg(width, height, body)


def diagram_svg(ir: IR) -> str:
    """Boxes top to bottom: stem, each stage, the head; each with its kind, depth, width, heads and
    the token grid it outputs at the default resolution."""
    size = ir.spec.img_size
    rows: list[tuple[str, str]] = [("input", f"image 3x{size}x{size}")]
    for w in ir.walk(size):
        row = w.kind.row(w.s_in, ir.model)
        if row is None:
            continue
        name = str(getattr(w.kind, "key", w.path[0]))
        depth = f" x{row.depth}" if row.depth != "-" else ""
        heads = f", {row.heads} heads" if row.heads != "-" else ""
        rows.append((f"{name}: {row.kind}{depth}", f"dim {w.s_out.dim}{heads}; tokens {w.s_out.tokens()}"))
    final = ir.final(size)
    head = ir.head.row(final, ir.model)
    rows.append((f"head: {head.kind}", f"{final.dim} -> {ir.model.num_classes} classes"))
    box_w, box_h, gap, pad = 520, 46, 22, 30
    height = pad * 2 + 30 + len(rows) * (box_h + gap)
    width = box_w + 2 * pad
    body = [
        f'<text x="{width / 2}" y="{pad}" text-anchor="middle" font-size="15">'
        f"{escape(ir.spec.title)} ({escape(ir.spec.name)}) @{size}</text>"
    ]
    for i, (title, detail) in enumerate(rows):
        y = pad + 20 + i * (box_h + gap)
        body.append(f'<rect x="{pad}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="#eef3fb" stroke="#35a"/>')
        body.append(f'<text x="{pad + 10}" y="{y + 19}" font-weight="bold">{escape(title)}</text>')
        body.append(f'<text x="{pad + 10}" y="{y + 36}">{escape(detail)}</text>')
        if i:
            body.append(
                f'<line x1="{width / 2}" y1="{y - gap}" x2="{width / 2}" y2="{y}" stroke="#35a" '
                'marker-end="url(#arrow)"/>'
            )
    body.insert(
        0,
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="6" refY="4" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#35a"/></marker></defs>',
    )
    return _svg(width, height, body)

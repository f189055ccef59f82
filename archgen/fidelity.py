"""Published numbers against our exact counts, with the precision each source printed."""

from __future__ import annotations

import math
from dataclasses import dataclass

from archgen.compiler import IR
from archgen.geometry import Size, size_of, size_text
from archgen.schema import Published


@dataclass(frozen=True)
class Check:
    entry: Published
    computed: int

    @property
    def within(self) -> bool:
        """Inside half a unit of the last printed digit ("86M" means 85.5M to 86.5M)."""
        return abs(self.computed - self.entry.value) <= self.entry.half_ulp

    @property
    def rel_err(self) -> float:
        """(published - ours) / ours: positive when the source prints more than we count; infinite when we
        count 0 and the source prints more (JSON shows it as null)."""
        if self.computed == 0:
            return 0.0 if self.entry.value == 0 else math.copysign(math.inf, self.entry.value)
        return (self.entry.value - self.computed) / self.computed

    @property
    def status(self) -> str:
        if self.within:
            return "ok" if self.entry.deviation is None else "stale deviation"
        return "deviation" if self.entry.deviation is not None else "UNEXPLAINED"

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "deviation")


def checks(ir: IR, img_size: int | Size | None = None) -> list[Check]:
    out = []
    for entry in ir.spec.published:
        if img_size is not None and entry.img_size != size_of(img_size):
            continue
        count = ir.count(entry.img_size)
        value = count.params if entry.quantity == "params" else count.in_convention(entry.convention)
        out.append(Check(entry, value))
    return out


def resolutions(ir: IR) -> list[Size]:
    """The spec's default resolution and every resolution with a published number."""
    return sorted({ir.spec.img_size} | {p.img_size for p in ir.spec.published})


def markdown_table(irs: list[IR]) -> str:
    """Every published number against our count, as the README's fidelity table (drift-checked)."""
    rows = [
        "| spec | @ | quantity | published (source) | computed | rel. err (pub-ours)/ours "
        "| status: explanation (abridged; full text in the spec) |",
        "|---|---|---|---|---|---|---|",
    ]
    for ir in irs:
        for c in checks(ir):
            e = c.entry
            conv = "" if e.convention == "macs" else ", fvcore convention"
            val = f"{c.computed / 1e6:,.2f}M" if e.quantity == "params" else f"{c.computed / 1e9:,.3f}G"
            why = ""
            if e.deviation:
                text = " ".join(e.deviation.split())
                why = ": " + (text if len(text) <= 190 else text[:187].rsplit(" ", 1)[0] + " …")
            cells = [ir.spec.name, size_text(e.img_size), e.quantity, f"{e.printed} ({e.source}{conv})", val]
            cells += [f"{c.rel_err:+.1%}", f"{c.status}{why}"]
            rows.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(rows) + "\n"

"""Published numbers against our exact counts, with the precision each source printed."""

from __future__ import annotations

from dataclasses import dataclass

from archgen.compiler import IR
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
        return (self.entry.value - self.computed) / self.computed

    @property
    def status(self) -> str:
        if self.within:
            return "ok" if self.entry.deviation is None else "stale deviation"
        return "deviation" if self.entry.deviation is not None else "UNEXPLAINED"

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "deviation")


def checks(ir: IR, img_size: int | None = None) -> list[Check]:
    out = []
    for entry in ir.spec.published:
        if img_size is not None and entry.img_size != img_size:
            continue
        count = ir.count(entry.img_size)
        value = count.params if entry.quantity == "params" else count.in_convention(entry.convention)
        out.append(Check(entry, value))
    return out


def resolutions(ir: IR) -> list[int]:
    """The spec's default resolution and every resolution with a published number."""
    return sorted({ir.spec.img_size} | {p.img_size for p in ir.spec.published})

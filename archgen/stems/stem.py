"""What every stem shares: the image in, a patch grid out. Not a part itself: the stems here subclass it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from archgen.base import Step, Tokens


@dataclass(frozen=True)
class Grid:
    """A patch-grid side as one expression of the image side: ``(size + offset) // stride``.

    Floor divisions compose (``a // b // c == a // (b * c)``), so a stem's strides and every later
    downsample fold into one ``stride``: VOLO's grid at its position table is ``H // 16`` by ``W // 16``.
    """

    offset: int
    stride: int

    def code(self, size: str) -> str:
        """The expression for an image side named ``size``: ``img_size // 16``, ``(H + 3) // 16``."""
        sign = "+" if self.offset > 0 else "-"
        value = f"({size} {sign} {abs(self.offset)})" if self.offset else size
        return f"{value} // {self.stride}" if self.stride != 1 else value

    def pair(self) -> str:
        """The grid (h, w) of the image (H, W) as code: ``(H // 16, W // 16)``."""
        return f"({self.code('H')}, {self.code('W')})"

    def at(self, size: int) -> int:
        return (size + self.offset) // self.stride

    def downsampled(self, stride: int, offset: int = 0, ceil: bool = False) -> Grid:
        """The grid after a step making ``(side + offset) // stride`` of each side, or with ``ceil`` its ceiling (a
        padding downsample: a partial cell at the end counts): floor divisions nest as
        ``((a + o1) // s1 + o2) // s2 == (a + o1 + o2 * s1) // (s1 * s2)`` and ceil(n / k) = (n + k - 1) // k."""
        offset += stride - 1 if ceil else 0
        return Grid(self.offset + offset * self.stride, self.stride * stride)


class Stem(Step):
    """A stem states its patch grid as code (``grid``) as well as by walking the state (``out``); a test
    keeps the two equal at every size."""

    slot = "stem"
    first_conv: ClassVar[str]  # the first conv's attribute path (timm's pretrained_cfg["first_conv"])

    def needs(self, s: Tokens) -> str | None:
        return None

    def grid(self) -> Grid:
        """The side of the patch grid it makes from an image side."""
        raise NotImplementedError

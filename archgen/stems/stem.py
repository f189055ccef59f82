"""What every stem shares: the image in, a patch grid out. Not a part itself: the stems here subclass it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from archgen.base import Step, Tokens


@dataclass(frozen=True)
class Grid:
    """A patch-grid side as one expression of the image side: ``(size + offset) // stride``.

    Floor divisions compose (``a // b // c == a // (b * c)``), so a stem's strides and every later
    downsample fold into one ``stride``: VOLO's grid at its position table is ``img_size // 16``.
    """

    offset: int
    stride: int

    def code(self, size: str) -> str:
        """The expression for an image side named ``size``: ``img_size // 16``, ``(H + 3) // 16``."""
        value = f"({size} + {self.offset})" if self.offset else size
        return f"{value} // {self.stride}" if self.stride != 1 else value

    def at(self, size: int) -> int:
        return (size + self.offset) // self.stride

    def downsampled(self, stride: int, ceil: bool = False) -> Grid:
        """The grid after a downsample by ``stride``; ``ceil``: a partial cell at the end counts (a padding
        downsample), and ceil(n / k) = (n + k - 1) // k folds into the offset as well."""
        offset = self.offset + self.stride * (stride - 1) if ceil else self.offset
        return Grid(offset, self.stride * stride)


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

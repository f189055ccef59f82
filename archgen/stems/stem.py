"""What every stem shares: the image in, a patch grid out. Not a part itself: the stems here subclass it."""

from __future__ import annotations

from typing import ClassVar

from archgen.base import Step, Tokens


class Stem(Step):
    """A stem states its patch grid as code (``grid``) as well as by walking the state (``out``); a test
    keeps the two equal at every size."""

    slot = "stem"
    first_conv: ClassVar[str]  # the first conv's attribute path (timm's pretrained_cfg["first_conv"])

    def needs(self, s: Tokens) -> str | None:
        return None

    def grid(self, size: str) -> str:
        """Python expression of the grid side for an image side named ``size`` (``img_size // 16``)."""
        raise NotImplementedError

    def grid_update(self) -> str | None:
        return self.grid("img_size")

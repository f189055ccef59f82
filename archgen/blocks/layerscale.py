"""LayerScale as a module (timm's layout ``ls1.gamma``): a learned per-channel scale of a residual branch."""

from __future__ import annotations

from typing import Literal

from archgen.base import Part


class LayerScale(Part):
    """Not written in specs: a branch's ``layerscale: {keys: ls}`` uses it (``keys: gamma`` stores CaiT's
    bare ``gamma_1`` parameters on the block instead)."""

    slot = "helper"

    kind: Literal["layerscale"] = "layerscale"

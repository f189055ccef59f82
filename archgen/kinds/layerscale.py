"""A stage of LayerScale blocks (CaiT): pre-norm transformer blocks whose residual branches are
scaled per channel by learnable vectors ``gamma_1`` and ``gamma_2``, initialised small."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from archgen.counting import Count, parameter
from archgen.kinds.base import Tokens
from archgen.kinds.transformer import Transformer


class LayerScaleTransformer(Transformer):
    """``depth`` blocks ``x + gamma_1 * attn(norm1(x))``, ``x + gamma_2 * mlp(norm2(x))``."""

    template = "layerscale.j2"
    label: ClassVar[str] = "LayerScale"

    kind: Literal["layerscale_transformer"] = Field(  # type: ignore[assignment]
        description="Pre-norm LayerScale blocks (timm CaiT `LayerScaleBlock`: `gamma_1`, `gamma_2`)."
    )
    init_values: float = Field(gt=0, le=10, description="Initial LayerScale value (write 1.0e-5).")

    def block_parts(self, s: Tokens) -> list[Count]:
        return [parameter("gamma_1", s.dim), parameter("gamma_2", s.dim), *super().block_parts(s)]

"""The block-kind catalogue. Adding a kind: a module + template beside it, one line in ``KINDS``."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from archgen.kinds.base import Kind
from archgen.kinds.ceit import LeFFStage
from archgen.kinds.class_attention import ClassAttention
from archgen.kinds.conv_patch_embed import ConvPatchEmbed
from archgen.kinds.deepvit import ReAttentionStage
from archgen.kinds.downsample import ConvDownsample
from archgen.kinds.drop_path import DropPath
from archgen.kinds.heads import DistilledHead, TokenHead
from archgen.kinds.i2t import ImageToTokens
from archgen.kinds.layernorm import FinalLayerNorm
from archgen.kinds.layerscale import LayerScaleTransformer
from archgen.kinds.lca import LayerClassAttention
from archgen.kinds.leff import LeFF
from archgen.kinds.mhsa import MultiHeadAttention
from archgen.kinds.mlp import Mlp
from archgen.kinds.outlook import OutlookAttention
from archgen.kinds.outlooker import Outlooker
from archgen.kinds.patch_embed import PatchEmbed
from archgen.kinds.pos_embed import LearnedPosEmbed
from archgen.kinds.pos_embed_2d import LearnedPosEmbed2d
from archgen.kinds.prefix_tokens import PrefixTokens
from archgen.kinds.reattention import ReAttention
from archgen.kinds.talking_heads import TalkingHeadsAttention
from archgen.kinds.transformer import Transformer
from archgen.kinds.volo_class_attention import VoloClassAttention
from archgen.kinds.volo_head import TokenLabelingHead
from archgen.kinds.volo_stem import ConvStem

# Kinds a spec can name with `kind:`, grouped by the slot they fill.
KINDS: tuple[type[Kind], ...] = (
    PatchEmbed,
    LearnedPosEmbed,
    Transformer,
    MultiHeadAttention,
    Mlp,
    FinalLayerNorm,
    TokenHead,
    DistilledHead,
    ConvStem,
    OutlookAttention,
    Outlooker,
    ConvDownsample,
    LearnedPosEmbed2d,
    VoloClassAttention,
    TokenLabelingHead,
    LayerScaleTransformer,
    TalkingHeadsAttention,
    ClassAttention,
    ImageToTokens,
    LeFFStage,
    LeFF,
    LayerClassAttention,
    ConvPatchEmbed,
    ReAttentionStage,
    ReAttention,
)

# Kinds the compiler adds itself (from `prefix_tokens:`) or that block kinds pull in.
INTERNAL: tuple[type[Kind], ...] = (PrefixTokens, DropPath)

SLOTS = ("stem", "pos_embed", "stage", "attention", "grid_attention", "mlp", "leff", "norm", "head")


def slot_type(slot: str) -> Any:
    """The discriminated union of every kind that fills ``slot``."""
    members = tuple(k for k in KINDS if k.slot == slot)
    if len(members) == 1:
        return members[0]
    return Annotated[Union[members], Field(discriminator="kind")]  # noqa: UP007


SLOT_TYPES = {f"{slot.title().replace('_', '')}Slot": slot_type(slot) for slot in SLOTS}

for _kind in (*KINDS, *INTERNAL):
    _kind.model_rebuild(_types_namespace=SLOT_TYPES)

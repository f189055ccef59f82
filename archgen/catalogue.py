"""The catalogue of parts. Adding one: a module and its template beside it, and one line here.

A part fills one slot (its ``slot``): a stem, a position table, a stage, an op inside a block's branch
(token mixers and feed-forwards alike), a head. An op added here works in every block at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from archgen.base import Part
from archgen.blocks.drop_path import DropPath
from archgen.blocks.layerscale import LayerScale
from archgen.blocks.quick_gelu import QuickGELU
from archgen.blocks.stage import Blocks, Branch, Insert, Pattern
from archgen.feedforwards.dwconv_mlp import DwConvMlp
from archgen.feedforwards.glu import Glu
from archgen.feedforwards.leff import LeFF
from archgen.feedforwards.mlp import Mlp
from archgen.heads.avg import AvgPoolHead
from archgen.heads.distilled import DistilledHead
from archgen.heads.map import MapHead
from archgen.heads.token import TokenHead
from archgen.heads.token_labeling import TokenLabelingHead
from archgen.mixers.class_attention import ClassAttention
from archgen.mixers.fused_attn_mlp import FusedAttentionMlp
from archgen.mixers.lsa import LocallyGroupedAttention
from archgen.mixers.mhsa import MultiHeadAttention
from archgen.mixers.outlook import OutlookAttention
from archgen.mixers.peg import PosConv
from archgen.mixers.reattention import ReAttention
from archgen.mixers.sra import SpatialReductionAttention
from archgen.mixers.talking_heads import TalkingHeadsAttention
from archgen.mixers.window_attention import WindowAttention
from archgen.rope.axial import AxialRope
from archgen.rope.mixed import MixedRope
from archgen.stages.conv_pool import ConvPool
from archgen.stages.downsample import ConvDownsample
from archgen.stages.lca import LayerClassAttention
from archgen.stages.norm import TokenNorm
from archgen.stages.patch_merging import PatchMerging
from archgen.stages.reshape import Reshape
from archgen.stages.stage_norm import StageNorm
from archgen.stems.conv_embed import ConvEmbed
from archgen.stems.conv_patch_embed import ConvPatchEmbed
from archgen.stems.i2t import ImageToTokens
from archgen.stems.patch_embed import PatchEmbed
from archgen.stems.volo_conv_stem import ConvStem
from archgen.tokens.join import JoinTokens
from archgen.tokens.learned import LearnedPosEmbed
from archgen.tokens.learned_2d import LearnedPosEmbed2d
from archgen.tokens.sincos import SinCosPosEmbed
from archgen.tokens.sincos_2d import SinCos2dPosEmbed

# Parts a spec names with `kind:`, grouped by the slot they fill.
KINDS: tuple[type[Part], ...] = (
    PatchEmbed,
    ConvStem,
    ImageToTokens,
    ConvPatchEmbed,
    ConvEmbed,
    LearnedPosEmbed,
    LearnedPosEmbed2d,
    SinCosPosEmbed,
    SinCos2dPosEmbed,
    AxialRope,
    MixedRope,
    Blocks,
    ConvDownsample,
    ConvPool,
    PatchMerging,
    LayerClassAttention,
    StageNorm,
    MultiHeadAttention,
    TalkingHeadsAttention,
    ReAttention,
    OutlookAttention,
    LocallyGroupedAttention,
    SpatialReductionAttention,
    PosConv,
    WindowAttention,
    ClassAttention,
    FusedAttentionMlp,
    Mlp,
    Glu,
    LeFF,
    DwConvMlp,
    TokenHead,
    DistilledHead,
    TokenLabelingHead,
    AvgPoolHead,
    MapHead,
)

# Parts the compiler adds itself (prefix tokens joining, layout changes) or that other parts use.
INTERNAL: tuple[type[Part], ...] = (JoinTokens, Reshape, TokenNorm, DropPath, LayerScale, QuickGELU)

SLOTS = ("stem", "pos_embed", "rope", "stage", "op", "head")
DEFAULT_KIND = {"stage": "blocks"}  # a stage mapping without `kind:` is a stage of blocks


def of_slot(slot: str) -> tuple[type[Part], ...]:
    return tuple(k for k in KINDS if k.slot == slot or slot in k.also)


def slot_type(slot: str) -> Any:
    """The union of every part that fills ``slot``, told apart by ``kind``."""
    members = of_slot(slot)
    if len(members) == 1:
        return members[0]
    default = DEFAULT_KIND.get(slot)

    def tag(value: Any) -> Any:
        return value.get("kind", default) if isinstance(value, dict) else getattr(value, "kind", None)

    return Annotated[
        Union[tuple(Annotated[k, Tag(k.tag())] for k in members)],  # noqa: UP007
        Discriminator(tag),
    ]


SLOT_TYPES = {f"{slot.title().replace('_', '')}Slot": slot_type(slot) for slot in SLOTS}

for _kind in (*KINDS, *INTERNAL, Branch, Pattern, Insert):
    _kind.model_rebuild(_types_namespace=SLOT_TYPES)

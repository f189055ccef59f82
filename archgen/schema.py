"""The spec schema: what a `specs/<name>.yaml` may say, checked field by field and across fields."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from archgen.base import TOKEN_ORDER, Strict
from archgen.catalogue import SLOT_TYPES
from archgen.geometry import Size, size_of, size_value
from archgen.norms import NormValue
from archgen.reserved import check_module_name

StemSlot = SLOT_TYPES["StemSlot"]
PosEmbedSlot = SLOT_TYPES["PosEmbedSlot"]
RopeSlot = SLOT_TYPES["RopeSlot"]
StageSlot = SLOT_TYPES["StageSlot"]
HeadSlot = SLOT_TYPES["HeadSlot"]

MAX_IMG_SIZE = 4096  # the largest image side a spec or an option may name


def _img_size(value: object) -> Size:
    """``224`` (a square) or ``[H, W]``, each side from 1 to MAX_IMG_SIZE."""
    sides = list(value) if isinstance(value, list | tuple) else [value]
    if len(sides) != (2 if isinstance(value, list | tuple) else 1) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in sides
    ):
        raise ValueError("write one side (224, a square) or [H, W] (e.g. [224, 320])")
    if not all(1 <= v <= MAX_IMG_SIZE for v in sides):
        raise ValueError(f"each side from 1 to {MAX_IMG_SIZE}")
    return size_of(sides[0] if len(sides) == 1 else sides)


_SIDE = {"type": "integer", "minimum": 1, "maximum": MAX_IMG_SIZE}
# read as a Size (H, W); written back as the spec would say it: `224` for a square
ImgSize = Annotated[
    Size,
    PlainValidator(_img_size),
    PlainSerializer(size_value),
    WithJsonSchema({"anyOf": [_SIDE, {"type": "array", "items": _SIDE, "minItems": 2, "maxItems": 2}]}),
]


Text = Annotated[str, Field(min_length=1, max_length=300)]
LongText = Annotated[str, Field(min_length=1, max_length=1000)]
PRINTED = re.compile(r"^(?P<num>[0-9]+(?:\.(?P<frac>[0-9]+))?)(?P<unit>[MGB])$")
UNITS = {"M": 1e6, "G": 1e9, "B": 1e9}  # papers print a billion parameters as B, a billion MACs as G


class Published(Strict):
    """One number as a source printed it. Exactly one of ``params`` and ``macs``."""

    img_size: ImgSize = Field(description="Resolution the number was measured at: `224` or `[H, W]`.")
    params: Annotated[str, Field(max_length=20)] | None = Field(
        default=None, description="Parameters as printed, e.g. `86M`, `22.1M` or `1.9B`."
    )
    macs: Annotated[str, Field(max_length=20)] | None = Field(
        default=None, description="Multiply-accumulates as printed, e.g. `17.6G` (papers call these FLOPs)."
    )
    source: Text = Field(description="Where the number is printed: paper and table, or repository file.")
    convention: Literal["macs", "fvcore"] = Field(
        default="macs",
        description="How the source counted: pure MACs, or fvcore's (MACs + LayerNorm/BatchNorm terms).",
    )
    deviation: LongText | None = Field(
        default=None,
        description="Why our exact count falls outside the printed precision (required if it does).",
    )

    @field_validator("params", "macs")
    @classmethod
    def _printed(cls, value: str | None) -> str | None:
        if value is not None and not PRINTED.match(value):
            raise ValueError("write a printed number with its unit, like 86M, 1.9B or 17.6G")
        return value

    @model_validator(mode="after")
    def _one_quantity(self) -> Published:
        if (self.params is None) == (self.macs is None):
            raise ValueError("give exactly one of params and macs")
        return self

    @property
    def quantity(self) -> Literal["params", "macs"]:
        return "params" if self.params is not None else "macs"

    @property
    def printed(self) -> str:
        return self.params if self.params is not None else self.macs  # type: ignore[return-value]

    @property
    def value(self) -> float:
        m = PRINTED.match(self.printed)
        assert m
        return float(m["num"]) * UNITS[m["unit"]]

    @property
    def half_ulp(self) -> float:
        """Half a unit in the last printed digit: the precision the source claims."""
        m = PRINTED.match(self.printed)
        assert m
        digits = len(m["frac"] or "")
        return 0.5 * 10.0**-digits * UNITS[m["unit"]]


class Reference(Strict):
    """The implementation whose state_dict layout and outputs the generated module reproduces."""

    package: Literal["timm", "official"] = Field(
        description="`timm` (pip package, parity-tested) or `official` (the authors' repository)."
    )
    model: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]+$", max_length=80)] = Field(
        description="Model name there, e.g. `deit_small_patch16_224`."
    )
    repo: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", max_length=100)] | None = Field(
        default=None, description="owner/name of the official repository (with package: official)."
    )
    tag: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$", max_length=80)] | None = Field(
        default=None,
        description="timm's default pretrained tag (`fb_in1k`): weights download from the Hugging Face hub as "
        "`timm/<model>.<tag>`; `untrained` (timm's word) or none: no released weights.",
    )

    num_classes: int | None = Field(
        default=None, ge=0, le=100000, description="Classes of the tagged weights, where not the spec's (0: no head)."
    )
    img_size: ImgSize | None = Field(
        default=None,
        description="Resolution the tagged weights were trained at, where not the spec's: `224` or `[H, W]`.",
    )
    fixed_input_size: bool | None = Field(
        default=None,
        description="What the tagged weights' pretrained_cfg says of the input size, where it differs from the "
        "architecture (timm marks every Twins model fixed, though PCPVT takes any size). The file's "
        "`pretrained_cfg` repeats the card; a built model's reports what it takes.",
    )
    hub: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", max_length=140)] | None = Field(
        default=None,
        description="Hugging Face hub repository of the tagged weights where timm's pretrained_cfg names another "
        "than `timm/<model>.<tag>` (weights shared between names: the QuickGELU CLIP towers).",
    )

    @property
    def hf_hub_id(self) -> str | None:
        released = self.package == "timm" and self.tag not in (None, "untrained")
        return (self.hub or f"timm/{self.model}.{self.tag}") if released else None


class Preprocessing(Strict):
    """How the reference weights expect images: timm's pretrained_cfg data fields."""

    mean: tuple[Annotated[float, Field(ge=-1000, le=1000)], ...] = Field(
        default=(0.485, 0.456, 0.406), min_length=1, max_length=64, description="Per-channel mean."
    )
    std: tuple[Annotated[float, Field(gt=0, le=1000)], ...] = Field(
        default=(0.229, 0.224, 0.225), min_length=1, max_length=64, description="Per-channel standard deviation."
    )
    crop_pct: float = Field(default=0.875, gt=0, le=1, description="Center-crop fraction at evaluation.")
    interpolation: Literal["bicubic", "bilinear", "nearest"] = Field(
        default="bicubic", description="Resize interpolation."
    )
    crop_mode: Literal["center", "squash", "border"] = Field(
        default="center",
        description="timm's eval crop: `center` (resize the short side, crop), `squash` (resize both sides to "
        "the crop), `border` (resize the long side, pad).",
    )


class PrefixTokens(Strict):
    """Learned tokens in front of the patch tokens; in the sequence they stand in this order."""

    cls: bool = Field(default=False, description="A class token `cls_token` (ViT).")
    dist: bool = Field(default=False, description="A distillation token `dist_token` (DeiT distilled).")
    reg: int = Field(default=0, ge=0, le=64, description="Register tokens, one parameter `reg_token` (1, reg, dim).")
    shared: bool = Field(
        default=False,
        description="All prefix tokens in one parameter `cls_token` (1, n, dim), as PiT keeps its class and "
        "distillation tokens.",
    )

    def sizes(self) -> tuple[tuple[str, int], ...]:
        """Each group present and its token count, in sequence order."""
        counts = {"cls": int(self.cls), "dist": int(self.dist), "reg": self.reg}
        return tuple((g, counts[g]) for g in TOKEN_ORDER if counts[g])


class FeaturesOnly(Strict):
    """The model under timm's ``features_only=True``, as timm's own wrapper of the reference presents it."""

    keys: Literal["getter", "list", "hook"] = Field(
        default="getter",
        description="State_dict keys, those of one of timm's wrappers: `getter` (FeatureGetterNet: `model.` and the "
        "model's keys), `list` (FeatureListNet: the model's children re-rooted, a container of numbered stages "
        "flattened: `layers_0.`; timm's Swin and PVT-v2) or `hook` (FeatureHookNet: `body.` and the model's keys, "
        "the final norm kept; timm's PiT).",
    )
    output_fmt: Literal["NCHW", "NHWC"] = Field(
        default="NCHW", description="Layout of the feature maps (timm's Swin returns its stages' NHWC grids)."
    )


class Spec(Strict):
    """One published variant, compiled to `generated/<name>.py`."""

    name: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=60), AfterValidator(check_module_name)] = (
        Field(description="Identifier of the variant; equals the file stem and names the factory function.")
    )
    family: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=40)] = Field(
        description="Family the variant belongs to (vit, deit, ...)."
    )
    title: Text = Field(description="Name as the paper prints it, e.g. `DeiT-S`.")
    paper: Text = Field(description="Citation of the paper that introduced the variant.")
    class_name: Annotated[
        str, Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=60), AfterValidator(check_module_name)
    ] = Field(description="Name of the generated nn.Module class.")
    reference: Reference | None = Field(default=None, description="Reference implementation for parity.")
    preprocessing: Preprocessing = Field(
        default=Preprocessing(), description="Input pipeline of the reference weights (timm's pretrained_cfg)."
    )
    img_size: ImgSize = Field(description="Default input resolution: `224` (a square) or `[H, W]`.")
    in_chans: int = Field(ge=1, le=64, description="Input channels.")
    num_classes: int = Field(ge=0, le=100000, description="Default classifier width (0: no classifier).")
    norm_eps: float = Field(gt=0, lt=1, description="Epsilon of every norm that sets none of its own (write 1.0e-6).")
    stem: StemSlot = Field(description="Image to tokens.")
    prefix_tokens: PrefixTokens = Field(
        default=PrefixTokens(), description="Learned tokens in front of the patch tokens: `{cls: true}` for ViT."
    )
    pos_embed: PosEmbedSlot | None = Field(default=None, description="Position embedding (none: no table).")
    rope: RopeSlot | None = Field(
        default=None,
        description="Rotary position table, computed once per forward from the patch grid, for the attentions that "
        "set `rope: true` (none: no table).",
    )
    norm_pre: NormValue = Field(
        default=None, description="Norm of every token after the embedding, before the first stage (CLIP's `norm_pre`)."
    )
    stages: tuple[StageSlot, ...] = Field(
        min_length=1,
        max_length=64,
        description="Stages, in order. A child spec may give a mapping from stage key to the fields it changes.",
    )
    norm: NormValue = Field(default=None, description="Final norm of every token, `norm` (none: no final norm).")
    norm_covers: Literal["all", "prefix"] = Field(
        default="all",
        description="Tokens the final norm reads: `all`, or `prefix`: the prefix tokens alone, the patch tokens "
        "dropped (PiT normalises its class and distillation tokens only).",
    )
    head: HeadSlot = Field(description="Classifier head(s).")
    features_only: FeaturesOnly = Field(
        default=FeaturesOnly(), description="What the model gives under timm's `features_only=True`."
    )
    conv_init: Literal["torch", "fan_out"] = Field(
        default="torch",
        description="Initial weights of the convolutions: PyTorch's default (`torch`: timm's ViT, Swin, PiT, VOLO), "
        "or `fan_out`: N(0, 2 / fan_out), fan_out = kernel area x out channels / groups, and zero bias (timm's "
        "PVT-v2 and Twins). Linears always take trunc_normal(0.02).",
    )
    drop_path_schedule: Literal["linear", "uniform"] = Field(
        default="linear",
        description="Stochastic-depth rates over the blocks that take one: `linear` from 0 to `drop_path_rate` "
        "(timm's ViT, DeiT, VOLO, ...), or `uniform`: `drop_path_rate` for every block (CaiT).",
    )
    published: tuple[Published, ...] = Field(default=(), max_length=64, description="Numbers the literature prints.")

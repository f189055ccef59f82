"""Norms and activations as values: a spec writes one wherever it stands (a branch's pre- or post-norm, the
final norm, ``fc_norm``, ``norm_pre``, QK-norm, a norm inside an op, the patch embedding's norm), and this
module renders, counts and traces it, so no other place knows which norms exist.

``norm: layernorm`` takes the defaults (the spec's ``norm_eps``, affine with bias), ``norm: none`` is no
norm, and a mapping sets the parameters: ``norm: {kind: rmsnorm, eps: 1.0e-5}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from archgen.base import Model, Part, Strict
from archgen.blocks.quick_gelu import QuickGELU
from archgen.counting import Count
from archgen.errors import unknown
from archgen.memory import T, Tape

NORM_KINDS = ("layernorm", "rmsnorm")


class Norm(Strict):
    """A normalisation over the channels (the last dimension) of every token."""

    kind: Literal["layernorm", "rmsnorm"] = Field(
        description="`layernorm` (nn.LayerNorm: mean and variance) or `rmsnorm` (nn.RMSNorm: root mean square)."
    )
    eps: float | None = Field(default=None, gt=0, lt=1, description="Epsilon (default: the spec's `norm_eps`).")
    affine: bool = Field(default=True, description="A learned per-channel weight (and bias, for layernorm).")
    bias: bool | None = Field(default=None, description="LayerNorm's learned bias (default: with `affine`).")

    @model_validator(mode="before")
    @classmethod
    def _default_bias(cls, data: Any) -> Any:
        """An unset bias takes its value (layernorm's follows ``affine``), so one module is one value: ``layernorm``
        and ``{kind: layernorm, bias: true}`` are the same class in a generated file."""
        if isinstance(data, dict) and data.get("bias") is None:
            data = {**data, "bias": data.get("kind") == "layernorm" and data.get("affine", True) is not False}
        return data

    @model_validator(mode="after")
    def _bias(self) -> Norm:
        if self.bias and self.kind == "rmsnorm":
            raise ValueError("rmsnorm has no bias")
        if self.bias and not self.affine:
            raise ValueError("a bias needs `affine: true`")
        return self

    @property
    def has_bias(self) -> bool:
        return bool(self.bias)

    def epsilon(self, m: Model) -> float:
        return self.eps if self.eps is not None else m.norm_eps

    def params(self, dim: int) -> int:
        return (dim if self.affine else 0) + (dim if self.has_bias else 0)

    def code(self, dim: str, m: Model) -> str:
        """The module, e.g. ``nn.LayerNorm(dim, eps=1e-06)``."""
        args = [dim, f"eps={self.epsilon(m)}"]
        if not self.affine:
            args.append("elementwise_affine=False")
        elif self.kind == "layernorm" and not self.has_bias:
            args.append("bias=False")
        cls = "nn.LayerNorm" if self.kind == "layernorm" else "nn.RMSNorm"
        return f"{cls}({', '.join(args)})"

    def count(self, name: str, dim: int, elements: int) -> Count:
        """Parameters; no MACs. fvcore's LayerNorm handle adds 5 terms per element (4 without affine), and
        fvcore has no RMSNorm handle."""
        extra = (5 if self.affine else 4) * elements if self.kind == "layernorm" else 0
        tensors = int(self.affine) + int(self.has_bias)
        return Count(name, self.params(dim), 0, (), extra, "norm", tensors=tensors)

    def memory(self, tape: Tape, x: T) -> T:
        return tape.norm(x, self.kind, self.affine, self.has_bias)

    def label(self) -> str:
        return "RMSNorm" if self.kind == "rmsnorm" else "LayerNorm"


def _norm_shorthand(value: Any) -> Any:
    """``none`` is no norm; a bare kind name takes the defaults."""
    if value == "none":
        return None
    if isinstance(value, str) and value not in NORM_KINDS:
        raise ValueError(unknown("norm", value, [*NORM_KINDS, "none"]))
    if not isinstance(value, (str, dict, Norm)) and value is not None:
        raise ValueError(f"a norm: {', '.join(NORM_KINDS)}, none, or a mapping with `kind:` and its options")
    return {"kind": value} if isinstance(value, str) else value


# A norm wherever a spec may write one: `layernorm`, `none`, or a mapping with the parameters.
NormValue = Annotated[
    Norm | None,
    BeforeValidator(_norm_shorthand, json_schema_input_type=Norm | Literal["layernorm", "rmsnorm", "none"] | None),
]
LAYERNORM = Norm(kind="layernorm")

# Activations, by the name timm's `act_layer` strings use, and the module each is written as.
Act = Literal["gelu", "gelu_tanh", "quick_gelu", "silu", "relu"]
ACT_CODE: dict[str, str] = {
    "gelu": "nn.GELU()",
    "gelu_tanh": 'nn.GELU(approximate="tanh")',
    "quick_gelu": "QuickGELU()",  # CLIP's sigmoid approximation: a class of the generated file
    "silu": "nn.SiLU()",
    "relu": "nn.ReLU()",
}


def act_field(default: str = "gelu", what: str = "Activation") -> Any:
    return Field(default=default, description=f"{what}: {', '.join(ACT_CODE)}.")


def act_parts(*acts: str) -> tuple[Part, ...]:
    """The classes the activations need in the generated file (QuickGELU's)."""
    return (QuickGELU(),) if "quick_gelu" in acts else ()


class Activated:
    """What a part with an ``act`` field writes for it: the module expression, and the class it needs. (No
    annotation here: pydantic would take it as a field and move it ahead of the part's own.)"""

    @property
    def act_code(self) -> str:
        return ACT_CODE[self.act]  # type: ignore[attr-defined]

    def helpers(self) -> tuple[Part, ...]:
        return act_parts(self.act)  # type: ignore[attr-defined]

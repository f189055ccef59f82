"""A norm over every token as a step of ``forward_features``: the final norm (timm `norm`) and the norm after
the embedding (CLIP's `norm_pre`). The spec writes them as norm values (archgen.norms); the compiler places
this step."""

from __future__ import annotations

from typing import Literal

from archgen.base import Model, Step, Tokens
from archgen.counting import Count
from archgen.errors import KindError
from archgen.memory import T, Tape
from archgen.norms import Norm


class TokenNorm(Step):
    """``key`` is ``norm`` (after the last stage) or ``norm_pre`` (before the first). A final norm that
    ``covers`` the prefix tokens alone drops the patch tokens (PiT hands only its class tokens to the head)."""

    slot = "internal"

    kind: Literal["token_norm"] = "token_norm"
    key: Literal["norm", "norm_pre"]
    norm: Norm
    covers: Literal["all", "prefix"] = "all"

    @property
    def label(self) -> str:
        """What tables call the step: the norm's kind (``layernorm``, ``rmsnorm``)."""
        return self.norm.kind

    @property
    def size_free(self) -> bool:
        return True

    @property
    def final(self) -> bool:
        return self.key == "norm"

    def out(self, s: Tokens, m: Model) -> Tokens:
        if self.covers == "all":
            return s
        if not s.prefix:
            raise KindError("norm_covers", "no prefix tokens reach the final norm")
        return s.with_(h=0, w=0)

    def count(self, s: Tokens, m: Model) -> Count:
        return self.norm.count(self.key, s.dim, self.out(s, m).n * s.dim)

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        return self.norm.memory(tape, x if self.covers == "all" else x[:, : s.prefix])

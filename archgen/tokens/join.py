"""Learned prefix tokens (class, distillation, registers) joining the token sequence.

The compiler adds this step from the spec's ``prefix_tokens``: right after the stem (before or after the
position table, as its ``covers`` says), or right before a stage that ``joins`` them (CaiT's class attention).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from archgen.base import TOKEN_ORDER, Model, Step, Tokens
from archgen.counting import Count, parameter
from archgen.errors import KindError
from archgen.memory import T, Tape


class JoinTokens(Step):
    """Creates ``<group>_token`` parameters (timm's ``cls_token``, ``dist_token``, ``reg_token``) and puts
    them in the sequence so that the groups stand in timm's order: class, distillation, registers."""

    slot = "tokens"

    kind: Literal["join"] = "join"
    groups: tuple[Literal["cls", "dist", "reg"], ...] = Field(description="Token groups joining here.")
    shared: bool = Field(default=False, description="The groups are one parameter, `cls_token` (PiT).")

    @property
    def params(self) -> tuple[str, ...]:
        """The groups that have a parameter of their own: the first holds the others when they are shared."""
        return self.groups[:1] if self.shared else self.groups

    def size(self, group: str, m: Model) -> int:
        """Tokens in the parameter of ``group`` (all the groups' when they share it)."""
        return sum(m.size(g) for g in self.groups) if self.shared else m.size(group)

    def needs(self, s: Tokens) -> str | None:
        return "seq"

    def out(self, s: Tokens, m: Model) -> Tokens:
        if s.layout != "seq":
            raise KindError("kind", "prefix tokens join a token sequence")
        groups = tuple(g for g in TOKEN_ORDER if g in s.groups or g in self.groups)
        return s.with_(groups=groups, prefix=sum(m.size(g) for g in groups))

    def count(self, s: Tokens, m: Model) -> Count:
        return Count.group("", [parameter(f"{g}_token", self.size(g, m) * s.dim) for g in self.params])

    def memory(self, tape: Tape, x: T, s: Tokens, m: Model) -> T:
        o = self.out(s, m)
        tokens = tape.zeros((x.shape[0], o.prefix - s.prefix, o.dim))  # the new tokens, expanded over the batch
        return tape.cat([tokens, x], dim=1)

    def no_weight_decay(self) -> tuple[str, ...]:
        return tuple(f"{g}_token" for g in self.params)

    def pieces(self, s: Tokens, m: Model) -> list[str]:
        """The tensors concatenated, in sequence order: new tokens by name, tokens already in as slices."""
        parts: list[str | tuple[int, int | None]] = []
        at = 0
        for g in self.out(s, m).groups:
            if g in self.groups:
                parts += [g] if g in self.params else []
                continue
            end = at + m.size(g)
            last = parts[-1] if parts else None
            parts[-1:] = [(last[0], end)] if isinstance(last, tuple) else [*parts[-1:], (at, end)]
            at = end
        parts.append((at, None))
        return [p if isinstance(p, str) else _slice(*p) for p in parts]


def _slice(start: int, end: int | None) -> str:
    if end is None:
        return f"x[:, {start}:]" if start else "x"
    return f"x[:, {start or ''}:{end}]"

"""Spec -> IR (every number decided) -> counts and generated source. Pure: no file I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archgen.counting import Count
from archgen.errors import KindError
from archgen.kinds.base import Model, Step, Tokens
from archgen.kinds.heads import Head
from archgen.kinds.prefix_tokens import PrefixTokens
from archgen.loader import Path_
from archgen.specs import LoadedSpec


@dataclass(frozen=True)
class Placed:
    """A step of ``forward_features`` and the spec path it came from (for error positions)."""

    kind: Step
    path: Path_


@dataclass(frozen=True)
class Walked:
    """A step with the token state before and after it, at one resolution."""

    kind: Step
    path: Path_
    s_in: Tokens
    s_out: Tokens
    offset: int  # index of the step's first block in the stochastic-depth schedule


@dataclass(frozen=True)
class IR:
    loaded: LoadedSpec
    model: Model
    steps: tuple[Placed, ...]
    head: Head

    @property
    def spec(self) -> Any:
        return self.loaded.spec

    def walk(self, img_size: int) -> list[Walked]:
        """Thread the token state through every step; bad hyper-parameters raise ``SpecError``."""
        s = Tokens(self.model.in_chans, img_size, img_size, 0, "image")
        out: list[Walked] = []
        offset = 0
        for placed in self.steps:
            try:
                nxt = placed.kind.out(s, self.model)
            except KindError as exc:
                raise self.loaded.error((*placed.path, exc.field), _at(exc.message, img_size, self)) from None
            out.append(Walked(placed.kind, placed.path, s, nxt, offset))
            offset += placed.kind.num_blocks()
            s = nxt
        if s.layout != "seq":
            raise self.loaded.error(("head",), "the head needs a token sequence after the last stage")
        return out

    def final(self, img_size: int) -> Tokens:
        return self.walk(img_size)[-1].s_out

    def count(self, img_size: int) -> Count:
        walked = self.walk(img_size)
        parts = [w.kind.count(w.s_in, self.model) for w in walked]
        parts.append(self.head.count(walked[-1].s_out, self.model))
        return Count.group("", _flatten(parts))


def _at(message: str, img_size: int, ir: IR) -> str:
    return message if img_size == ir.spec.img_size else f"at img_size {img_size}: {message}"


def _flatten(parts: list[Count]) -> list[Count]:
    """Unnamed groups (several top-level attributes from one step) dissolve into their children."""
    out: list[Count] = []
    for part in parts:
        out.extend(part.children if not part.name else (part,))
    return out


def resolve(loaded: LoadedSpec) -> IR:
    spec = loaded.spec
    stages = [Placed(stage, ("stages", i)) for i, stage in enumerate(spec.stages)]
    joins = any(stage.joins_prefix_tokens for stage in spec.stages)
    _check_keys(loaded)
    # Where the prefix tokens and the position table enter forward_features:
    # - the tokens join after the stem, unless a stage joins them itself (then right before it);
    # - a table with prefix slots is added after the tokens, a patch-only table before them;
    # - a table with `before: <key>` is added right before that stage.
    tokens = None
    if spec.prefix_tokens:
        tokens = Placed(PrefixTokens(tokens=spec.prefix_tokens, joined_by_stage=joins), ("prefix_tokens",))
    pos = Placed(spec.pos_embed, ("pos_embed",)) if spec.pos_embed is not None else None
    before = getattr(spec.pos_embed, "before", None)
    steps = [Placed(spec.stem, ("stem",))]
    if pos is not None and before is None:
        steps.append(pos)
    if tokens is not None and not joins:
        covers_prefix = pos is not None and getattr(pos.kind, "covers_prefix", False)
        steps.insert(1 if covers_prefix else len(steps), tokens)
    for stage in stages:
        if pos is not None and before is not None and getattr(stage.kind, "key", None) == before:
            steps.append(pos)
        if tokens is not None and stage.kind.joins_prefix_tokens and tokens not in steps:
            steps.append(tokens)
        steps.append(stage)
    if pos is not None and pos not in steps:
        raise loaded.error(("pos_embed", "before"), f"no stage has key '{before}'")
    steps.append(Placed(spec.norm, ("norm",)))
    model = Model(
        in_chans=spec.in_chans,
        num_classes=spec.num_classes,
        norm_eps=spec.norm_eps,
        prefix_tokens=tuple(spec.prefix_tokens),
        total_depth=sum(p.kind.num_blocks() for p in steps),
    )
    ir = IR(loaded, model, tuple(steps), spec.head)
    try:
        spec.head.check(model)
    except KindError as exc:
        raise loaded.error(("head", exc.field), exc.message) from None
    for entry in {p.img_size for p in spec.published} | {spec.img_size}:
        ir.walk(entry)
    return ir


def _check_keys(loaded: LoadedSpec) -> None:
    """Stage keys are unique; ``name.i`` keys fill a ModuleList in order 0, 1, 2, …"""
    seen: dict[str, int] = {}
    for i, stage in enumerate(loaded.spec.stages):
        key = getattr(stage, "key", None)
        if key is None:
            continue
        name, _, index = key.partition(".")
        if key in seen or (not index and name in seen) or (index and seen.get(name, -1) != int(index) - 1):
            expected = f"{name}.{seen.get(name, -1) + 1}" if index else "a key used once"
            raise loaded.error(("stages", i, "key"), f"'{key}' out of order or repeated; expected {expected}")
        seen[key] = 0
        seen[name] = int(index) if index else 0

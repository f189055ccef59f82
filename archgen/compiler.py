"""Spec -> IR (every number decided) -> counts and generated source. Pure: no file I/O here.

The compiler places the steps a spec implies (prefix tokens joining, the position table) and, while it
walks the token state through them, converts between the patch sequence and the patch grid wherever the
next step needs the other layout. Parts never convert tokens themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archgen.base import Model, Step, Tokens
from archgen.counting import Count
from archgen.errors import KindError, Pos, SpecError
from archgen.geometry import Size, size_of, size_text
from archgen.heads.head import Head
from archgen.loader import Path_, dotted
from archgen.memory import AMP, ITEMSIZE, Footprint, StepMemory, Tape, optimizer_bytes
from archgen.naming import class_names
from archgen.norms import Norm
from archgen.schema import MAX_IMG_SIZE
from archgen.specs import LoadedSpec
from archgen.stages.norm import TokenNorm
from archgen.stages.reshape import Reshape
from archgen.tokens.join import JoinTokens

# Model-wide fields every step depends on (after the resolution, which is one only at the spec's own size).
MODEL_INPUTS: tuple[Path_, ...] = (("in_chans",), ("prefix_tokens",), ("num_classes",), ("norm_eps",))


@dataclass(frozen=True)
class Placed:
    """A step of ``forward_features`` and the spec path it came from (for error positions).

    ``container``/``start``: where a stage's blocks live when it continues another stage's container.
    """

    kind: Step
    path: Path_
    container: str | None = None
    start: int = 0


@dataclass(frozen=True, kw_only=True)
class Walked(Placed):
    """A step with the token state before and after it, at one resolution."""

    s_in: Tokens
    s_out: Tokens
    offset: int  # index of the step's first block in the stochastic-depth schedule


@dataclass(frozen=True)
class IR:
    loaded: LoadedSpec
    model: Model
    steps: tuple[Placed, ...]
    head: Head
    fc_norm: Norm | None  # the final norm where it runs after the head's pooling (timm's fc_norm)

    @property
    def spec(self) -> Any:
        return self.loaded.spec

    def walk(self, img_size: int | Size, size_from: tuple[Pos | str, str] | None = None) -> list[Walked]:
        """Thread the token state through every step, converting layouts where a step needs it; bad
        hyper-parameters raise ``SpecError`` at the field that causes them, or, when the resolution came
        from elsewhere (an option, a published entry), at ``size_from``: (position, field) of the size.
        ``img_size``: (H, W), or one side of a square."""
        img_size = size_of(img_size)
        s = Tokens(self.model.in_chans, *img_size, "image")
        out: list[Walked] = []
        offset = 0
        for index, placed in enumerate([*self.steps, None]):
            step = placed.kind if placed is not None else None
            path = placed.path if placed is not None else ("head",)
            need = self.head.needs() if step is None else (step.needs(s) if s.layout != "image" else None)
            try:
                if step is not None and s.layout != "image" and not s.patches and not isinstance(step, TokenNorm):
                    raise KindError("kind", "no patch tokens are left here (lca hands on the class token alone); "
                                    "only the final norm and the head may follow")  # fmt: skip
                if need is not None and need != s.layout:
                    if placed is not None and placed.container is not None:
                        raise KindError("block", f"its blocks need a {need}, the container's a {s.layout}")
                    reshape = Reshape(to=need)
                    nxt = reshape.out(s, self.model)
                    out.append(Walked(reshape, path, s_in=s, s_out=nxt, offset=offset))
                    s = nxt
                if step is None:
                    self.head.check(s, self.model)
                    break
                nxt = step.out(s, self.model)
            except KindError as exc:
                raise self._walk_error(
                    index, (*path, *field_path(exc.field)), exc.message, img_size, size_from
                ) from None
            assert placed is not None
            out.append(Walked(step, path, placed.container, placed.start, s_in=s, s_out=nxt, offset=offset))
            offset += step.num_blocks()
            s = nxt
        return out

    def _inputs(self, index: int, img_size: Size) -> list[Path_]:
        """What step ``index`` (the head after the last) depends on, nearest first: its own fields, the steps
        before it, then the model-wide fields. An inherited value that fails is blamed on the first of these
        the user's own file changed."""
        own = [self.steps[index].path] if index < len(self.steps) else [("head",)]
        before = [p.path for p in reversed(self.steps[:index])]
        size: list[Path_] = [("img_size",)] if img_size == self.spec.img_size else []
        return [*own, *before, *size, *MODEL_INPUTS]

    def _walk_error(
        self, index: int, path: Path_, message: str, img_size: Size, size_from: tuple[Pos | str, str] | None
    ) -> SpecError:
        if size_from is not None:
            pos, field = size_from
            where = self.loaded.located.where(path)
            return SpecError(pos, field, f"{size_text(img_size)}: {dotted(path)}: {message} ({where})")
        return self.loaded.error(path, _at(message, img_size, self), inputs=self._inputs(index, img_size))

    def check_img_size(self, img_size: int | Size, option: str = "--img-size") -> None:
        """A resolution given as an option: any error names the option, not the spec's file (which the
        option, not the file, makes fail)."""
        if not all(1 <= side <= MAX_IMG_SIZE for side in size_of(img_size)):
            text = size_text(img_size)
            raise SpecError(option, "", f"{text}: choose each side of the resolution from 1 to {MAX_IMG_SIZE}")
        self.walk(img_size, (option, ""))

    def final(self, img_size: int | Size) -> Tokens:
        return self.walk(img_size)[-1].s_out

    def count(self, img_size: int | Size) -> Count:
        walked = self.walk(img_size)
        return self._total([_placed_count(w, self.model) for w in walked], walked)

    def _total(self, placed: list[Count], walked: list[Walked]) -> Count:
        head = self.head.count(walked[-1].s_out, self.model, self.fc_norm)
        return Count.group("", _flatten([*placed, head]))

    def memory(
        self,
        img_size: int | Size,
        batch: int,
        dtype: str = "float32",
        checkpointing: bool = False,
        optimizer: str = "adamw",
        amp: str | None = None,
    ) -> Footprint:
        """Bytes of one training step: weights, gradients, optimizer state, and the activations autograd
        saves during ``model(x)`` (forward_features, then forward_head), traced step by step. ``dtype`` is
        the module's (and the image's); ``amp`` (bf16, fp16) runs the forward under ``torch.autocast`` in
        that dtype, which needs a float32 module."""
        if amp is not None and dtype != "float32":
            raise ValueError(f"amp {amp} runs a float32 module under autocast, not a {dtype} one")
        itemsize = ITEMSIZE[dtype]
        tape = Tape(itemsize, checkpointing, ITEMSIZE[AMP[amp]] if amp is not None else None)
        x = tape.input((batch, self.model.in_chans, *size_of(img_size)))
        walked = self.walk(img_size)
        steps: list[StepMemory] = []
        placed = [_placed_count(w, self.model) for w in walked]
        for w, count in zip(walked, placed, strict=True):
            before, tape.blocks = tape.total, []
            x = w.kind.memory(tape, x, w.s_in, self.model)
            row = w.kind.row(w.s_in, self.model)
            name = count.name or ", ".join(c.name for c in count.children) or w.kind.label
            kind = row.kind if row is not None else w.kind.label
            steps.append(StepMemory(name, kind, count.params, tape.total - before, tuple(tape.blocks)))
        before = tape.total
        self.head.memory(tape, x, walked[-1].s_out, self.model, self.fc_norm)
        total = self._total(placed, walked)
        row = self.head.row(walked[-1].s_out, self.model)
        steps.append(StepMemory("head", row.kind, total.params - sum(c.params for c in placed), tape.total - before))
        return Footprint(
            batch=batch,
            dtype=dtype,
            amp=amp,
            checkpointing=checkpointing,
            optimizer=optimizer,
            params_bytes=total.params * itemsize,
            grads_bytes=total.trainable * itemsize,
            optimizer_bytes=optimizer_bytes(optimizer, total.trainable, total.tensors, itemsize),
            activation_bytes=tape.total,
            steps=tuple(steps),
            recompute_bytes=tape.recompute,
        )


def _placed_count(w: Walked, m: Model) -> Count:
    count = w.kind.count(w.s_in, m)
    if w.container is None:
        return count
    # a stage continuing another's container: its blocks are numbered on under the container's name
    blocks = [c.renamed(str(w.start + int(c.name))) for c in count.children]
    return Count.group(w.container, blocks)


def field_path(field: str) -> Path_:
    """``block[0].op.kind`` -> ``("block", 0, "op", "kind")``."""
    out: list[str | int] = []
    for part in field.split("."):
        name, *indices = part.replace("]", "").split("[")
        out += [name, *(int(i) for i in indices)] if name else [int(i) for i in indices]
    return tuple(out)


def _at(message: str, img_size: Size, ir: IR) -> str:
    return message if img_size == ir.spec.img_size else f"at img_size {size_text(img_size)}: {message}"


def _flatten(parts: list[Count]) -> list[Count]:
    """Unnamed groups (several top-level attributes from one step) dissolve into their children; groups
    with the same name (a container two stages fill) merge."""
    out: list[Count] = []
    for part in parts:
        for child in part.children if not part.name else (part,):
            if out and out[-1].name == child.name and child.children:
                out[-1] = Count.group(child.name, [*out[-1].children, *child.children])
            else:
                out.append(child)
    return out


def resolve(loaded: LoadedSpec) -> IR:
    spec = loaded.spec
    stages = _stages(loaded)
    late = _late_tokens(loaded)
    shared = ("prefix_tokens", "shared")
    if spec.prefix_tokens.shared and not spec.prefix_tokens.cls:
        raise loaded.error(shared, "the one parameter is `cls_token`: set `cls: true`", inputs=[("prefix_tokens",)])
    if spec.prefix_tokens.shared and late:
        raise loaded.error(shared, "one parameter joins at once: no stage may join a group", inputs=[("stages",)])
    early = tuple(g for g, _ in spec.prefix_tokens.sizes() if g not in late)
    steps = [Placed(spec.stem, ("stem",))]
    pos = spec.pos_embed
    before = getattr(pos, "before", None)
    if pos is not None and before is None:
        first = pos.joins_first(early)
        if spec.prefix_tokens.shared and first and first != early:
            raise loaded.error(shared, f"one parameter joins at once: the position table covers {', '.join(first)} "
                               "alone", inputs=[("pos_embed",), ("prefix_tokens",)])  # fmt: skip
        steps += (
            [Placed(JoinTokens(groups=first, shared=spec.prefix_tokens.shared), ("prefix_tokens",))] if first else []
        )
        steps.append(Placed(pos, ("pos_embed",)))
        early = tuple(g for g in early if g not in first)
    if early:
        steps.append(Placed(JoinTokens(groups=early, shared=spec.prefix_tokens.shared), ("prefix_tokens",)))
    if spec.norm_pre is not None:
        steps.append(Placed(TokenNorm(key="norm_pre", norm=spec.norm_pre), ("norm_pre",)))
    for placed in stages:
        if pos is not None and before is not None and getattr(placed.kind, "key", None) == before:
            steps.append(Placed(pos, ("pos_embed",)))
        joins = getattr(placed.kind, "joins", ())
        if joins:
            steps.append(Placed(JoinTokens(groups=joins), (*placed.path, "joins")))
        steps.append(placed)
    if pos is not None and all(p.kind is not pos for p in steps):
        raise loaded.error(("pos_embed", "before"), f"no stage has key '{before}'")
    fc_norm = spec.norm if spec.head.takes_norm() else None
    if spec.norm is not None and fc_norm is None:
        steps.append(Placed(TokenNorm(key="norm", norm=spec.norm, covers=spec.norm_covers), ("norm",)))
    elif spec.norm_covers != "all":
        why = "has no final norm" if spec.norm is None else "norms the pooled tokens (fc_norm)"
        raise loaded.error(("norm_covers",), f"the model {why}: leave norm_covers out", inputs=[("head",), ("norm",)])
    model = Model(
        in_chans=spec.in_chans,
        num_classes=spec.num_classes,
        norm_eps=spec.norm_eps,
        token_sizes=spec.prefix_tokens.sizes(),
        total_depth=sum(p.kind.num_blocks() for p in steps),
        schedule=spec.drop_path_schedule,
    )
    ir = IR(loaded, model, tuple(_with_rope(IR(loaded, model, tuple(steps), spec.head, fc_norm))), spec.head, fc_norm)
    ir.walk(spec.img_size)
    for i, entry in enumerate(spec.published):  # a size the spec cannot take is the entry's error
        ir.walk(entry.img_size, (loaded.located.where(("published", i, "img_size")), f"published[{i}].img_size"))
    clash = class_names(ir.walk(spec.img_size), model, spec.head).get(spec.class_name)
    if clash is not None:
        raise loaded.error(("class_name",), f"'{spec.class_name}' is also the name of the model's {clash} class")
    return ir


def _stages(loaded: LoadedSpec) -> list[Placed]:
    """Stages in order, with the container of each stage that ``continues`` another. Stage keys are unique;
    ``name.i`` keys fill a ModuleList in order 0, 1, 2, …"""
    seen: dict[str, tuple[int, bool]] = {}  # ModuleList -> its last entry, and whether that holds named members
    stem_list, _, stem_index = str(getattr(loaded.spec.stem, "key", "")).partition(".")
    if stem_index.isdigit():  # the stem fills entry 0 of a ModuleList the stages go on filling (patch_embeds.0)
        seen[stem_list] = (int(stem_index), False)
    inserted: dict[str, int] = {}  # ModuleLists that stages' inserts fill (pos_block.0, pos_block.1, ...)
    placed: list[Placed] = []
    for i, stage in enumerate(loaded.spec.stages):
        if getattr(stage, "insert", None) is not None:
            _insert_key(loaded, i, stage.insert.key, seen, inserted)
        key = stage.key
        if key in {p.kind.key for p in placed}:  # type: ignore[attr-defined]
            raise loaded.error(("stages", i, "key"), f"'{key}' is used by an earlier stage")
        target = getattr(stage, "continues", None)
        if target is not None:
            placed.append(_continuing(loaded, i, stage, target, placed))
            continue
        name, _, rest = key.partition(".")
        index, _, member = rest.partition(".")
        last, named = seen.get(name, (-1, False))
        # an entry's next member may follow it (layers.1.downsample, layers.1.blocks); else the next entry
        fits = not index and name not in seen
        fits |= bool(index) and (int(index) == last + 1 or (int(index) == last and named and bool(member)))
        if not fits:
            expected = f"{name}.{last + 1}" if index else "a key used once"
            raise loaded.error(("stages", i, "key"), f"'{key}' out of order or repeated; expected {expected}")
        seen[name] = (int(index) if index else 0, bool(member))
        placed.append(Placed(stage, ("stages", i)))
    return placed


def _insert_key(loaded: LoadedSpec, i: int, key: str, seen: dict[str, Any], inserted: dict[str, int]) -> None:
    """A stage's insert names a module of its own: an attribute no stage uses, or the next entry of a ModuleList
    that inserts fill in order (``pos_block.0``, ``pos_block.1``)."""
    name, _, index = key.partition(".")
    expected = inserted.get(name, -1) + 1
    if name in seen or (name in inserted and not index) or (index and int(index) != expected):
        want = f"{name}.{expected}" if index else "a name no stage or other insert uses"
        raise loaded.error(("stages", i, "insert", "key"), f"'{key}' out of order or taken; expected {want}")
    inserted[name] = int(index) if index else 0


def _continuing(loaded: LoadedSpec, i: int, stage: Any, target: str, placed: list[Placed]) -> Placed:
    prev = placed[-1] if placed else None
    if prev is None or target not in (prev.kind.key, prev.container):  # type: ignore[attr-defined]
        raise loaded.error(("stages", i, "continues"), f"'{target}' is not the stage just before this one")
    for field in ("collect_cls", "updates"):
        if getattr(prev.kind, field, None) != getattr(stage, field):
            raise loaded.error(("stages", i, field), f"must equal the continued stage's `{field}`")
    if stage.joins:
        raise loaded.error(("stages", i, "joins"), "tokens cannot join inside a block container")
    pos = loaded.spec.pos_embed
    if pos is not None and getattr(pos, "before", None) == stage.key:
        raise loaded.error(("pos_embed", "before"), "a position table cannot be added inside a block container")
    container = prev.container or prev.kind.key  # type: ignore[attr-defined]
    start = prev.start + prev.kind.depth  # type: ignore[attr-defined]
    return Placed(stage, ("stages", i), container, start)


def _late_tokens(loaded: LoadedSpec) -> set[str]:
    """Prefix tokens that stages join (the rest join right after the stem)."""
    present = {g for g, _ in loaded.spec.prefix_tokens.sizes()}
    late: set[str] = set()
    for i, stage in enumerate(loaded.spec.stages):
        for group in getattr(stage, "joins", ()):
            if group not in present:
                raise loaded.error(("stages", i, "joins"), f"no `{group}` token in prefix_tokens")
            if group in late:
                raise loaded.error(("stages", i, "joins"), f"`{group}` already joins at an earlier stage")
            late.add(group)
    return late


def _rope_field(stage: Any) -> Path_:
    """Where a stage's first op that takes the rotary table says so: ``("block", 0, "op", "rope")`` (in a
    cycle, ``("cycle", j, "block", 0, "op", "rope")``)."""
    patterns = [(("cycle", j), p.block) for j, p in enumerate(stage.cycle)] if stage.cycle else [((), stage.block)]
    for where, block in patterns:
        for i, b in enumerate(block):
            if b.op is not None and b.op.takes_rope:
                return (*where, "block", i, "op", "rope")
            for j, op in enumerate(b.ops):
                if op.takes_rope:
                    return (*where, "block", i, "ops", j, "rope")
    return ("block",)


def _with_rope(ir: IR) -> list[Placed]:
    """The steps with the spec's rotary table placed right before the first stage that uses it, told the head
    layout of the attentions that do: one head width (and, for a table per block and head, one head count)
    and one patch grid, the stem's, for all of them."""
    loaded, rope = ir.loaded, ir.spec.rope
    walked = ir.walk(ir.spec.img_size)
    users = [w for w in walked if getattr(w.kind, "takes_rope", False)]
    if rope is None:
        if users:
            field = (*users[0].path, *_rope_field(users[0].kind))
            raise loaded.error(field, "needs the model's rotary table: add a top-level `rope:` (axial or mixed)")
        return list(ir.steps)
    if not users:
        raise loaded.error(("rope",), "no attention uses the rotary table: set `rope: true` on an mhsa op")
    first = users[0]
    heads = first.kind.resolve_heads(first.s_in.dim)
    roots: dict[str, bool] = {}  # whether the blocks of each container take the table
    for w in walked:
        takes = getattr(w.kind, "takes_rope", None)
        if takes is not None and w.container is None:
            roots[w.kind.key] = takes
        elif takes is not None and roots.get(str(w.container)) != takes:
            raise loaded.error((*w.path, "block"), "blocks of one container all take the rotary table or none do")
    for w in users[1:]:
        h = w.kind.resolve_heads(w.s_in.dim)
        if w.s_in.dim // h != first.s_in.dim // heads or (rope.kind == "mixed" and h != heads):
            what = "head width" if rope.kind != "mixed" else "head count and width"
            raise loaded.error((*w.path, "heads"), f"every attention using the rotary table needs one {what}")
    last = walked.index(users[-1])
    if any(w.kind.grid_stride() != 1 for w in walked[:last]):
        raise loaded.error(("rope",), "the rotary table covers the stem's patch grid: no downsample may come "
                           "before a stage that uses it")  # fmt: skip
    depth = sum(w.kind.depth for w in users)
    table = rope.resolved(first.s_in.dim // heads, heads, depth)
    steps = list(ir.steps)
    at = next(i for i, p in enumerate(steps) if p.kind is first.kind)
    return [*steps[:at], Placed(table, ("rope",)), *steps[at:]]

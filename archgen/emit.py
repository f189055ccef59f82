"""IR -> ``{"generated/<name>.py": source}``. Pure and deterministic: build, check and tests share it."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from archgen import features
from archgen.base import Model, Op, Part, Tokens
from archgen.compiler import IR, Walked
from archgen.fidelity import checks
from archgen.geometry import Size, size_code, size_text
from archgen.naming import block_names, op_names
from archgen.norms import Norm
from archgen.pyformat import broken, def_line
from archgen.safety import check_source
from archgen.stages.norm import TokenNorm
from archgen.stems.stem import Grid, Stem

HERE = Path(__file__).resolve().parent
BODY_INDENT = 8  # model __init__ lines sit inside a class and a method
# What the model template itself uses: standard library and torch only (the libraries that load weights,
# huggingface_hub and safetensors, are imported by the loading code when it runs).
BASE_IMPORTS = (
    "import contextlib",
    "from pathlib import Path",
    "from typing import Any",
    "import torch",
    "from torch import nn",
    "from torch.utils.checkpoint import checkpoint",
)
# isort order: plain imports before from-imports, each alphabetical (ruff's I001 checks this).
_IMPORT_KEY = re.compile(r"^(import|from) ([\w.]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["pyrepr"] = pyrepr
    env.filters["comment"] = comment_text
    return env


def pyrepr(value: Any) -> str:
    """A Python literal in ruff's style (double-quoted strings, also inside tuples)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, tuple):
        return "(" + ", ".join(map(pyrepr, value)) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def comment_text(value: Any) -> str:
    """Free text made safe for a ``#`` comment: one line, no control characters."""
    return " ".join(_CONTROL.sub(" ", str(value)).split())


def docstring_literal(text: str) -> str:
    """A triple-quoted literal whose value is exactly ``text`` (backslashes and quotes escaped)."""
    body = "".join(ch if ch == "\n" or not _CONTROL.match(ch) else " " for ch in text)
    body = body.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if body.endswith('"'):
        body = body[:-1] + '\\"'
    return f'"""{body}\n"""' if "\n" in body else f'"""{body}"""'


@dataclass
class _Ctx:
    """What a step's ``init``/``forward`` macros see.

    ``c.attr`` is how code reaches the step's module (``self.blocks``, ``self.network[2]``) and
    ``c.define(expr)`` the statement that creates it; keys like ``network.2`` become ModuleList entries.
    ``c.members`` lists the entries of a block container (several when stages continue it); ``c.grid`` is
    the patch grid of ``s_in`` as code of the image side (None while the input is the image).
    """

    k: Any
    m: Model
    s_in: Tokens
    s_out: Tokens
    offset: int
    members: list[str] = field(default_factory=list)
    fc_norm: Norm | None = None
    grid: Grid | None = None
    img_size: str = ""  # the spec's resolution as printed: 224, or 224x320 (H x W)
    rope_run: str = ""  # the rotary-table argument of the stage's ``_run`` call: ", rope" or ", rope[12:24]"
    rope_block: str = ""  # ... of one block in a loop over the stage's container: ", rope" or ", rope[i]"
    insert_attr: str = ""  # a stage's insert between two blocks: how code reaches it (``self.pos_block[0]``)
    insert_define: str = ""  # ... and the statement creating it

    def __post_init__(self) -> None:
        key = str(getattr(self.k, "key", ""))
        self.list_name, _, rest = key.partition(".")
        index, _, self.sub = rest.partition(".")
        self.entry = f"self.{self.list_name}[{index}]" if index else ""
        self.attr = f"{self.entry}.{self.sub}" if self.sub else self.entry or f"self.{key}"
        self.indexed = bool(index)

    @property
    def rope_indexed(self) -> bool:
        """Whether each block takes its own table (learned frequencies), so loops over blocks count them."""
        return "i]" in self.rope_block

    def define(self, expr: str) -> str:
        plain = self.indexed and not self.sub
        line = f"self.{self.list_name}.append({expr})" if plain else f"{self.attr} = {expr}"
        return broken(line, BODY_INDENT)

    def define_call(self, func: str, args: list[str]) -> str:
        """``func(*args)`` on one line if it fits, else one argument a line with a trailing comma."""
        if len(args) == 1:
            return self.define(f"{func}({args[0]})")
        return self.define(func + "(\n" + "".join(f"    {a},\n" for a in args) + ")")


@dataclass(frozen=True)
class _ClassCtx:
    """What a part's ``classes`` macro sees: the model, its own class name, the names of the classes it uses,
    and for a step the tokens it receives (``s``)."""

    m: Model
    name: str
    names: Callable[[Part], str]
    code: Any = None
    s: Tokens | None = None


def _macros(kind: Part) -> Any:
    return environment().get_template(kind.template()).module


def _split_classes(text: str) -> list[str]:
    """Top-level definitions, each with its decorators: split where a blank line precedes one."""
    return [b.strip("\n") for b in re.split(r"\n\s*\n(?=class |def |@)", text) if b.strip()]


def _imports(code: list[str]) -> list[str]:
    """The file's imports: the model template's always, math and torch.nn.functional where the parts use them;
    isort's order."""
    lines = set(BASE_IMPORTS)
    for module, line in (("F", "import torch.nn.functional as F"), ("math", "import math")):
        if any(re.search(rf"(?<![\w.]){module}\.", text) for text in code):
            lines.add(line)

    def key(line: str) -> tuple[int, int, str]:
        m = _IMPORT_KEY.match(line)
        assert m, line
        third_party = m[2].split(".")[0] == "torch"
        return (int(third_party), 0 if m[1] == "import" else 1, m[2])

    ordered = sorted(lines, key=key)
    stdlib = [line for line in ordered if key(line)[0] == 0]
    return [*stdlib, "", *ordered[len(stdlib) :]] if stdlib else ordered


def _parts(kind: Part) -> list[Part]:
    """The part and the parts its classes use, leaf first."""
    out: list[Part] = []
    for helper in kind.helpers():
        out.extend(_parts(helper))
    return [*out, kind]


class _Classes:
    """Every class definition of the file, leaf first, each once, under the names naming gave it."""

    def __init__(self, walked: list[Walked], ir: IR) -> None:
        self.m = ir.model
        self.ops = op_names([p for k in [*(w.kind for w in walked), ir.head] for p in _parts(k) if isinstance(p, Op)])
        self.blocks = block_names(walked, ir.model)
        self.text: dict[str, str] = {}
        for w in walked:
            for part in _parts(w.kind):
                self.add(part, w)
        for part in _parts(ir.head):
            self.add(part, None)

    def name(self, part: Part) -> str:
        return self.ops[part.identity()] if isinstance(part, Op) else type(part).__name__

    def add(self, part: Part, w: Walked | None) -> None:
        step = w is not None and part is w.kind
        if step and hasattr(part, "patterns"):  # a stage of blocks: a class per kind of block it holds
            assert w is not None
            for kind in part.patterns():
                name = self.blocks[kind.identity(w.s_in, self.m)]
                self.define(kind, _ClassCtx(self.m, name, self.name, kind.code(w.s_in, self.m, self.ops), w.s_in))
            return
        self.define(part, _ClassCtx(self.m, self.name(part), self.name, None, w.s_in if step else None))

    def define(self, part: Part, ctx: _ClassCtx) -> None:
        text = str(_macros(part).classes(part, ctx)).strip("\n")
        for block in _split_classes(text):
            found = re.match(r"(?:@.*\n)*(?:class|def) (\w+)", block)
            assert found, block
            prev = self.text.get(found[1])
            assert prev is None or prev == block, f"two definitions of {found[1]}"  # naming keeps them apart
            self.text[found[1]] = block


def emit(ir: IR) -> dict[str, str]:
    spec = ir.spec
    model = ir.model
    walked = ir.walk(spec.img_size)
    classes = _Classes(walked, ir)
    final = walked[-1].s_out
    head_ctx = _Ctx(ir.head, model, final, final, 0, fc_norm=ir.fc_norm)
    head = _macros(ir.head)
    inits: list[str | _Ctx] = []
    ctxs: list[_Ctx] = []
    step_lines: list[str] = []  # each walked step's forward code ("" for a stage that continues a container)
    lists: set[str] = set()
    containers: dict[str, _Ctx] = {}
    ropes = _rope_args(walked)
    for w, grid in zip(walked, _grids(walked), strict=True):
        ctx = _Ctx(w.kind, model, w.s_in, w.s_out, w.offset, grid=grid, img_size=size_text(spec.img_size))
        ctx.rope_run, ctx.rope_block = ropes.get(id(w), ("", ""))
        ctxs.append(ctx)
        if hasattr(w.kind, "entry"):
            # the stage's init names its patch grid `grid` (stage.j2); a stage continuing a container writes it out
            pair = "" if grid is None else grid.pair() if w.container is not None else "grid"
            entry = w.kind.entry(w.s_in, lambda k, w=w: classes.blocks[k.identity(w.s_in, model)], w.offset, pair)
            if w.container is not None:  # continues a container: its blocks join that stage's entries
                containers[w.container].members.append(entry)
                step_lines.append("")
                continue
            ctx.members.append(entry)
            containers[w.kind.key] = ctx
        if ctx.indexed and ctx.list_name not in lists:
            lists.add(ctx.list_name)
            inits.append(f"self.{ctx.list_name} = nn.ModuleList()")
        if ctx.sub and ctx.entry not in lists:  # an entry holding named members: a stage's downsample, blocks
            lists.add(ctx.entry)
            inits.append(f"self.{ctx.list_name}.append(nn.ModuleDict())")
        insert = getattr(w.kind, "insert", None)
        if insert is not None:  # a module beside the blocks' container, created right after it
            name, _, index = insert.key.partition(".")
            if index and name not in lists:
                lists.add(name)
                inits.append(f"self.{name} = nn.ModuleList()")
            expr = w.kind.inserted(w.s_in, classes.name(insert.op), grid.pair() if grid is not None else "")
            ctx.insert_attr = f"self.{name}[{index}]" if index else f"self.{name}"
            ctx.insert_define = f"self.{name}.append({expr})" if index else f"self.{name} = {expr}"
        inits.append(ctx)
        step_lines.append(str(_macros(w.kind).forward(ctx)).strip("\n"))
    # rendered after the walk: a container's entries are complete once every stage that continues it is seen
    init_lines = [i if isinstance(i, str) else str(_macros(i.k).init(i)).strip("\n") for i in inits]
    init_lines.append(str(head.init(head_ctx)).strip("\n"))
    methods = [str(_macros(c.k).methods(c)).strip("\n") for c in ctxs if hasattr(_macros(c.k), "methods")]
    forwards = live([f for f in step_lines if f], ("h", "w"))
    # norm=True normalises a tap only where the final norm reads every token (PiT's reads the class tokens)
    has_norm = any(isinstance(w.kind, TokenNorm) and w.kind.final and w.kind.covers == "all" for w in walked)
    taps = features.taps(walked, spec.img_size, final.dim if has_norm else None)
    intermediates = _intermediates(taps, walked, ctxs, step_lines, ir.head.needs()) if taps else []
    code = [*classes.text.values(), *forwards, *intermediates, *methods]
    if spec.conv_init == "fan_out":
        code.append("math.sqrt")  # the model's own _init_weights draws with it
    text = (
        environment()
        .get_template("templates/model.py.j2")
        .render(
            source=comment_text(ir.loaded.source),
            docstring=docstring_literal(describe(ir)),
            imports=_imports(code),
            pretrained_cfg=pretrained_cfg(ir),
            classes=list(classes.text.values()),
            class_name=spec.class_name,
            name=spec.name,
            img_size=size_code(spec.img_size),
            num_classes=spec.num_classes,
            in_chans=spec.in_chans,
            num_features=final.dim,
            pool=ir.head.pool,
            total_depth=model.total_depth if any(getattr(w.kind, "drops", False) for w in walked) else 0,
            schedule=model.schedule,
            conv_init=spec.conv_init,
            inits=[i for i in init_lines if i],
            feature_info=_feature_info(taps),
            size_free=size_free(ir),
            fixed_grid=fixed_grid(ir),
            fixed_resize=fixed_resize(ir),
            grid_h=spec.stem.grid().code("H"),
            grid_w=spec.stem.grid().code("W"),
            resize=_resize(walked, ctxs, windows=False),
            resize_windows=_resize(walked, ctxs, windows=True),
            rewindows=any(getattr(w.kind, "rewindows", False) for w in walked),
            methods=[m for m in methods if m],
            uses_run=any("self._run(" in f for f in [*forwards, *intermediates]),
            rope=_rope_kind(walked),
            run_without_rope=any(re.search(r"self\._run\(.*, x\)", f) for f in [*forwards, *intermediates]),
            forwards=forwards,
            taps=taps is not None,
            prefixed_taps=taps is not None and taps.taps[0].prefixed,
            intermediates=intermediates,
            prune=_prune(taps, walked, containers, model, ir.fc_norm),
            forward_head=str(head.forward_head(head_ctx)).strip("\n"),
            get_classifier=str(head.get_classifier(head_ctx)).strip("\n"),
            reset=str(head.reset(head_ctx)).strip("\n"),
            no_weight_decay=sorted({name for w in walked for name in w.kind.no_weight_decay()}),
            trunc_normal=sorted({name for w in walked for name in w.kind.trunc_normal()}),
            own_init=any(p.own_init for k in [*(w.kind for w in walked), ir.head] for p in _parts(k)),
            classifiers=ir.head.classifiers(),
            head_prefixes=_prefixes(ir.head.classifiers()),
            factory_doc=docstring_literal(textwrap.fill(_factory_doc(spec), width=110)),
            factory_def=def_line(
                spec.name,
                "pretrained: bool = False, checkpoint_path: str | Path | None = None, **kwargs: Any",
                spec.class_name,
                0,
            ),
        )
    )
    path = f"generated/{spec.name}.py"
    check_source(text, path)
    return {path: text}


def pretrained_cfg(ir: IR) -> list[tuple[str, Any]]:
    """timm's pretrained_cfg fields for the reference weights (the spec's name where there are none)."""
    spec = ir.spec
    ref, pre = spec.reference, spec.preprocessing
    timm = ref is not None and ref.package == "timm"
    heads = ir.head.classifiers()
    size = ref.img_size if timm and ref.img_size else spec.img_size
    return [
        ("architecture", ref.model if timm else spec.name),
        ("tag", ref.tag if timm else None),
        ("hf_hub_id", ref.hf_hub_id if timm else None),
        ("num_classes", ref.num_classes if timm and ref.num_classes is not None else spec.num_classes),
        ("input_size", (spec.in_chans, *size)),
        ("pool_size", _pool_size(ir, size)),
        ("fixed_input_size", ref.fixed_input_size if timm and ref.fixed_input_size is not None else not size_free(ir)),
        ("mean", pre.mean),
        ("std", pre.std),
        ("crop_pct", pre.crop_pct),
        ("crop_mode", pre.crop_mode),
        ("interpolation", pre.interpolation),
        ("first_conv", spec.stem.first_conv),
        ("classifier", heads[0] if len(heads) == 1 else heads),
    ]


def _pool_size(ir: IR, size: Size) -> tuple[int, int] | None:
    """The final feature map's (h, w) where forward_features returns one; None for tokens."""
    if ir.head.needs() == "seq":
        return None
    final = ir.final(size)
    return (final.h, final.w)


def _ops(ir: IR) -> list[Op]:
    return [p for w in ir.walk(ir.spec.img_size) for p in _parts(w.kind) if isinstance(p, Op)]


def fixed_grid(ir: IR) -> str | None:
    """Why the model refuses dynamic_img_size and set_input_size (an op built for one grid), or None."""
    return min((op.fixed_grid for op in _ops(ir) if op.fixed_grid), default=None)


def fixed_resize(ir: IR) -> str | None:
    """Why the model refuses set_input_size (an op its reference rebuilds otherwise), or None."""
    return min((op.fixed_resize for op in _ops(ir) if op.fixed_resize), default=None)


def size_free(ir: IR) -> bool:
    """Whether every step takes any input size as it is (else only img_size, or others with dynamic_img_size)."""
    return all(w.kind.size_free for w in ir.walk(ir.spec.img_size))


def _prefixes(classifiers: tuple[str, ...]) -> str:
    """The argument of ``key.startswith`` that picks the classifiers' weights."""
    prefixes = tuple(f"{name}." for name in classifiers)
    return pyrepr(prefixes[0] if len(prefixes) == 1 else prefixes)


def _factory_doc(spec: Any) -> str:
    ref = spec.reference
    if ref is not None and ref.hf_hub_id:
        weights = (
            f"pretrained=True loads timm's {ref.model}.{ref.tag} weights (from the Hugging Face hub, "
            "through the cache timm uses; needs huggingface_hub and safetensors)"
        )
    else:
        weights = "no weights on the Hugging Face hub"
    h, w = spec.img_size
    return comment_text(f"{spec.title}; {h}x{w} by default; {weights}; checkpoint_path= "
                        "loads a local file (safetensors or torch).")  # fmt: skip


def _intermediates(
    taps: features.Taps, walked: list[Walked], ctxs: list[_Ctx], step_lines: list[str], layout: str
) -> list[str]:
    loop = ""
    if taps.per_block:
        root = ctxs[taps.taps[0].step]
        loop = str(_macros(root.k).forward_taps(root, taps.taps[0])).strip("\n")
    # stopped early, the features are returned in the layout forward_features returns them in
    early = {"seq": "x", "grid": "x.reshape(x.shape[0], h, w, -1)", "image": _feature_map(taps, '"NCHW"')}[layout]
    return live(features.intermediates_body(taps, step_lines, loop, early), ("h", "w"))


def _feature_map(taps: features.Taps, fmt: str) -> str:
    """The call turning the tokens at a tap into a feature map of ``fmt``."""
    return f"feature_map(x, h, w, {'0, ' if taps.taps[0].prefixed else ''}{fmt})"


def _feature_info(taps: features.Taps | None) -> str:
    if taps is None:
        return ""
    if taps.per_block:
        t = taps.taps[0]
        entry = f'dict(num_chs={t.num_chs}, reduction={t.reduction}, module=f"{taps.container}.{{i}}")'
        return f"self.feature_info = [{entry} for i in range({len(taps.taps)})]"
    rows = "".join(f'    dict(num_chs={t.num_chs}, reduction={t.reduction}, module="{t.module}"),\n' for t in taps.taps)
    return f"self.feature_info = [\n{rows}]"


def _prune(
    taps: features.Taps | None, walked: list[Walked], containers: dict[str, _Ctx], m: Model, fc_norm: Norm | None
) -> list[str]:
    """prune_intermediate_layers: the blocks (or the ModuleList entries) up to the last tap kept, and every
    step's attributes dropped once no kept tap needs them (see features.prune_body)."""
    if taps is None:
        return []
    truncate = ""
    if taps.per_block:
        attr = containers[taps.container].attr
        truncate = f"{attr} = {attr}[: last + 1]"
    elif taps.prunable is not None:
        ends = [int(t.module.partition(".")[2]) for t in taps.taps]
        truncate = f"self.{taps.prunable} = self.{taps.prunable}[: {ends}[last] + 1]"
    cut = {taps.container, taps.prunable}
    owned: list[tuple[str, ...]] = []
    for w in walked:
        count = w.kind.count(w.s_in, m)
        names = (w.container,) if w.container else (count.name,) if count.name else (c.name for c in count.children)
        kept = not (isinstance(w.kind, TokenNorm) and w.kind.final)  # the final norm: prune_norm's
        owned.append(tuple(n for n in names if kept and n.partition(".")[0] not in cut))
    has_norm = any(isinstance(w.kind, TokenNorm) and w.kind.final for w in walked)
    return features.prune_body(taps, owned, truncate, has_norm, fc_norm is not None)


def _rope_kind(walked: list[Walked]) -> str | None:
    """The kind of the model's rotary table (``axial``, ``mixed``), or None without one."""
    return next((w.kind.kind for w in walked if w.kind.slot == "rope"), None)


def _rope_args(walked: list[Walked]) -> dict[int, tuple[str, str]]:
    """For each walked stage of blocks that take the rotary table (by ``id``), the table argument of its
    ``_run`` call and of one block in a loop over its container. A table per block (learned frequencies) is
    sliced: the blocks that use it take its entries in model order."""
    kind = _rope_kind(walked)
    users = [w for w in walked if getattr(w.kind, "takes_rope", False) and w.container is None]
    if kind is None or not users:
        return {}
    stages = [v for v in walked if hasattr(v.kind, "takes_rope")]
    depth = {id(w): sum(v.kind.depth for v in stages if (v.container or v.kind.key) == w.kind.key) for w in users}
    total = sum(depth.values())
    out: dict[int, tuple[str, str]] = {}
    offset = 0
    for w in users:
        if kind != "mixed":
            out[id(w)] = (", rope", ", rope")
            continue
        end = offset + depth[id(w)]
        run = ", rope" if (offset, end) == (0, total) else f", rope[{offset}:{end}]"
        out[id(w)] = (run, ", rope[i]" if offset == 0 else f", rope[{offset} + i]")
        offset = end
    return out


def _grids(walked: list[Walked]) -> list[Grid | None]:
    """The patch grid each step receives, as one expression of the image side (None for the image)."""
    grids: list[Grid | None] = []
    grid: Grid | None = None
    for w in walked:
        grids.append(grid)
        if w.s_in.layout == "image":  # a stem (a conv embedding may also stand later, on the grid)
            assert isinstance(w.kind, Stem)
            grid = w.kind.grid()
        else:
            grid = grid and grid.downsampled(w.kind.grid_stride(), w.kind.grid_offset(), w.kind.grid_ceil())
    return grids


def _resize(walked: list[Walked], ctxs: list[_Ctx], windows: bool) -> list[str]:
    """set_input_size: each position table rebuilt for the grid at the new size (``windows``: each stage's
    windows rescaled instead)."""
    lines: list[str] = []
    for w, ctx in zip(walked, ctxs, strict=True):
        if hasattr(_macros(w.kind), "resize") and getattr(w.kind, "rewindows", False) == windows:
            lines += str(_macros(w.kind).resize(ctx)).strip("\n").splitlines()
    return lines


_CODE = re.compile(r"^(.*?)(?:  #.*)?$")


def live(lines: list[str], names: tuple[str, ...]) -> list[str]:
    """Drops assignments to ``names`` (``h, w = ...``) that no later line reads before the next assignment,
    walking backwards so that a chain of updates nothing reads in the end (``h, w = (h + 1) // 2, ...`` after
    each downsample) goes as a whole; a call among them is kept for its effect (``self.patch_grid(x)``
    checks the input size). Straight-line code only (forward_features)."""
    flat = [line for text in lines for line in text.split("\n")]
    target = ", ".join(names) + " = "
    use = re.compile(r"(?<![\w.])(" + "|".join(names) + r")(?!\w)")
    read = False  # whether a later line reads the names before assigning them
    out: list[str] = []
    for line in reversed(flat):
        stripped = line.lstrip()
        code = _CODE.match(stripped)[1]  # type: ignore[index]
        if not code.startswith(target):
            read |= bool(use.search(code))
            out.append(line)
            continue
        value = code[len(target) :]
        if read:
            out.append(line)
            read = bool(use.search(value))
        elif "(" in value and not use.search(value):
            out.append(line[: len(line) - len(stripped)] + value + "  # checks the input size")
    return out[::-1]


def describe(ir: IR) -> str:
    """The module docstring: title, stage table at the default resolution, counts, published numbers."""
    spec = ir.spec
    res = spec.img_size
    lines = [_fill(f"{spec.title} ({spec.paper}).")]
    if spec.reference is not None:
        lines.append(_fill(f"Reference implementation: {spec.reference.package} {spec.reference.model}."))
    lines += ["", table(ir, res), ""]
    for size in sorted({res} | {p.img_size for p in spec.published}):
        c = ir.count(size)
        lines.append(f"@{size_text(size)}: params {c.params:,}  MACs {c.macs:,} ({c.macs / 1e9:.2f} G)  [analytic]")
    pub = checks(ir)
    if pub:
        lines += ["", "Published (printed precision; a deviation is explained in the spec):"]
        for chk in pub:
            e = chk.entry
            text = f"@{size_text(e.img_size)} {e.quantity} {e.printed} [{e.source}]: {chk.status} ({chk.rel_err:+.1%})"
            lines.append(_fill(text, indent="  "))
    return "\n".join(_CONTROL.sub(" ", line).rstrip() for line in "\n".join(lines).split("\n"))


def _fill(text: str, indent: str = "", width: int = 100) -> str:
    return textwrap.fill(comment_text(text), width=width, initial_indent=indent, subsequent_indent=indent + "  ")


def table(ir: IR, img_size: int | Size) -> str:
    rows = [("step", "kind", "depth", "dim", "heads", f"tokens @{size_text(img_size)}")]
    for w in ir.walk(img_size):
        row = w.kind.row(w.s_in, ir.model)
        if row is None:
            continue
        name = str(getattr(w.kind, "key", w.path[0]))
        rows.append((name, row.kind, row.depth, str(w.s_out.dim), row.heads, w.s_out.tokens()))
    final = ir.final(img_size)
    head_row = ir.head.row(final, ir.model)
    rows.append(("head", head_row.kind, "-", str(final.dim), "-", str(ir.model.num_classes) + " classes"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)

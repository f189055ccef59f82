"""IR -> ``{"generated/<name>.py": source}``. Pure and deterministic: build, check and tests share it."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from archgen.compiler import IR
from archgen.fidelity import checks
from archgen.kinds.base import Kind, Model
from archgen.safety import check_source

HERE = Path(__file__).resolve().parent
LINE_LENGTH = 120  # ruff's line-length for generated/ (pyproject.toml)
BODY_INDENT = 8  # model __init__ lines sit inside a class and a method
BASE_IMPORTS = ("import torch", "from torch import nn", "from torch.utils.checkpoint import checkpoint")
# isort order: plain imports before from-imports, each alphabetical (ruff's I001 checks this).
_IMPORT_KEY = re.compile(r"^(import|from) ([\w.]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(HERE / "kinds"), str(HERE / "templates")]),
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
    """A Python literal in ruff's style (double-quoted strings)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
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


class _Ctx:
    """What a kind's ``init``/``forward`` macros see for one step.

    ``c.attr`` is how code reaches the step's module (``self.blocks``, ``self.network[2]``) and
    ``c.define(expr)`` the statement that creates it; keys like ``network.2`` become ModuleList entries.
    """

    def __init__(self, kind: Kind, model: Model, s_in: Any, s_out: Any, offset: int) -> None:
        self.k = kind
        self.m = model
        self.s_in = s_in
        self.s_out = s_out
        self.offset = offset
        key = str(getattr(kind, "key", ""))
        self.list_name, _, index = key.partition(".")
        self.attr = f"self.{self.list_name}[{index}]" if index else f"self.{key}"
        self.indexed = bool(index)

    def define(self, expr: str) -> str:
        line = f"self.{self.list_name}.append({expr})" if self.indexed else f"{self.attr} = {expr}"
        if len(line) + BODY_INDENT <= LINE_LENGTH or not expr.endswith(")"):
            return line
        # Too long for one line: break inside the outermost call, as ruff format would.
        head, _, inner = expr.partition("(")
        return self.define(f"{head}(\n    {inner[:-1]}\n)") if "\n" not in expr else line


def _macros(kind: Kind) -> Any:
    return environment().get_template(kind.template).module


def _classes(kind: Kind, model: Model, out: dict[str, str]) -> None:
    """Class definitions of ``kind`` and its children, leaf first, each once."""
    for child in kind.children():
        _classes(child, model, out)
    text = str(_macros(kind).classes(kind, model)).strip("\n")
    for block in _split_classes(text):
        name = re.match(r"class (\w+)", block)
        assert name, block
        prev = out.get(name[1])
        if prev is not None and prev != block:
            raise ValueError(f"two different definitions of class {name[1]}: give one of them another name")
        out[name[1]] = block


def _split_classes(text: str) -> list[str]:
    return [b.strip("\n") for b in re.split(r"\n(?=class )", text) if b.strip()]


def _imports(kinds: list[Kind]) -> list[str]:
    lines = set(BASE_IMPORTS)
    for kind in kinds:
        lines.update(kind.imports)

    def key(line: str) -> tuple[int, int, str]:
        m = _IMPORT_KEY.match(line)
        assert m, line
        third_party = m[2].split(".")[0] == "torch"
        return (int(third_party), 0 if m[1] == "import" else 1, m[2])

    ordered = sorted(lines, key=key)
    stdlib = [line for line in ordered if key(line)[0] == 0]
    return [*stdlib, "", *ordered[len(stdlib) :]] if stdlib else ordered


def _all_kinds(kind: Kind) -> list[Kind]:
    out = [kind]
    for child in kind.children():
        out.extend(_all_kinds(child))
    return out


def emit(ir: IR) -> dict[str, str]:
    spec = ir.spec
    model = ir.model
    walked = ir.walk(spec.img_size)
    kinds: list[Kind] = []
    for w in walked:
        kinds.extend(_all_kinds(w.kind))
    kinds.extend(_all_kinds(ir.head))
    classes: dict[str, str] = {}
    for kind in [w.kind for w in walked] + [ir.head]:
        _classes(kind, model, classes)
    final = walked[-1].s_out
    head_ctx = _Ctx(ir.head, model, final, final, 0)
    head = _macros(ir.head)
    inits, forwards, methods = [], [], []
    lists: set[str] = set()
    for w in walked:
        ctx = _Ctx(w.kind, model, w.s_in, w.s_out, w.offset)
        if ctx.indexed and ctx.list_name not in lists:
            lists.add(ctx.list_name)
            inits.append(f"self.{ctx.list_name} = nn.ModuleList()")
        macros = _macros(w.kind)
        if hasattr(macros, "methods"):  # optional: methods a kind adds to the model class
            methods.append(str(macros.methods(ctx)).strip("\n"))
        inits.append(str(macros.init(ctx)).strip("\n"))
        forwards.append(str(macros.forward(ctx)).strip("\n"))
    inits.append(str(head.init(head_ctx)).strip("\n"))
    no_wd = sorted({name for w in walked for name in w.kind.no_weight_decay()})
    text = (
        environment()
        .get_template("model.py.j2")
        .render(
            source=comment_text(ir.loaded.source),
            docstring=docstring_literal(describe(ir)),
            imports=_imports(kinds),
            classes=list(classes.values()),
            class_name=spec.class_name,
            name=spec.name,
            img_size=spec.img_size,
            num_classes=spec.num_classes,
            num_features=final.dim,
            total_depth=model.total_depth,
            inits=[i for i in inits if i],
            forwards=[f for f in forwards if f],
            methods=[m for m in methods if m],
            uses_run=any("self._run(" in f for f in forwards),
            forward_head=str(head.forward_head(head_ctx)).strip("\n"),
            reset=str(head.reset(head_ctx)).strip("\n"),
            no_weight_decay=no_wd,
            factory_doc=docstring_literal(comment_text(f"{spec.title}; {spec.img_size}x{spec.img_size} by default.")),
        )
    )
    path = f"generated/{spec.name}.py"
    check_source(text, path)
    return {path: text}


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
        lines.append(f"@{size}: params {c.params:,}  MACs {c.macs:,} ({c.macs / 1e9:.2f} G)  [analytic]")
    pub = checks(ir)
    if pub:
        lines += ["", "Published (printed precision; a deviation is explained in the spec):"]
        for chk in pub:
            e = chk.entry
            text = f"@{e.img_size} {e.quantity} {e.printed} [{e.source}]: {chk.status} ({chk.rel_err:+.1%})"
            lines.append(_fill(text, indent="  "))
    return "\n".join(_CONTROL.sub(" ", line).rstrip() for line in "\n".join(lines).split("\n"))


def _fill(text: str, indent: str = "") -> str:
    import textwrap

    return textwrap.fill(comment_text(text), width=100, initial_indent=indent, subsequent_indent=indent + "  ")


def table(ir: IR, img_size: int) -> str:
    rows = [("step", "kind", "depth", "dim", "heads", f"tokens @{img_size}")]
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

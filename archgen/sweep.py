"""``archgen sweep``: every combination of a few spec fields, validated like a spec, counted analytically,
filtered by budgets and ranked, with the Pareto frontier marked. No torch: thousands of variants a second.

A combination is the resolved spec (what ``archgen show`` prints) with each ``--set`` path replaced by one of
its values. Rows are numbered in enumeration order (the last ``--set`` varies fastest), so a row number names
the same variant whatever the budgets; ``emit`` writes one as a spec that ``extends:`` the swept one.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from archgen.catalogue import INTERNAL, KINDS
from archgen.compiler import resolve
from archgen.errors import Pos, SpecError
from archgen.geometry import Size, parse_size, size_text, size_value
from archgen.loader import Located, Path_
from archgen.memory import precision
from archgen.schema import Spec
from archgen.specs import NOT_INHERITED, LoadedSpec, fields_at, first_error

MAX_COMBINATIONS = 100_000  # the default cap (the CLI's --max-combinations raises it)
MAX_VALUES = 10_000  # per axis (a range such as 64..4096:1 would be a typo more often than a wish)
PROGRESS_EVERY = 250  # rows between progress reports
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?::(\d+))?$")
_SUFFIX = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


class SweepError(ValueError):
    """A bad ``--set`` or budget: one line for the user, exit 2."""


@dataclass(frozen=True)
class Axis:
    path: Path_  # list items by index (``stages.0.depth``), as ``archgen show`` prints the spec
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        return _name(self.path)


@dataclass(frozen=True)
class Budget:
    params: int | None = None
    macs: int | None = None
    memory: int | None = None  # bytes of one training step (needs a batch)

    def allows(self, row: Row) -> bool:
        return (
            (self.params is None or row.params <= self.params)
            and (self.macs is None or row.macs <= self.macs)
            and (self.memory is None or (row.memory_bytes or 0) <= self.memory)
        )


@dataclass(frozen=True)
class MemorySetting:
    batch: int
    dtype: str = "float32"
    checkpointing: bool = False
    optimizer: str = "adamw"
    amp: str | None = None  # torch.autocast dtype (bf16, fp16) around a float32 module

    @property
    def precision(self) -> str:
        return precision(self.dtype, self.amp)


@dataclass
class Row:
    index: int  # 1-based, in enumeration order
    values: tuple[Any, ...]
    params: int = 0
    macs: int = 0
    memory_bytes: int | None = None  # one training step (parameters, gradients, optimizer, activations)
    activation_bytes: int | None = None
    reason: str | None = None  # why the combination is not a valid spec
    within: bool = True  # meets every budget
    frontier: bool = False


@dataclass(frozen=True)
class Sweep:
    spec: str
    img_size: Size | None  # None: each row at its own `img_size` (the sweep varies it)
    axes: tuple[Axis, ...]
    budget: Budget
    memory: MemorySetting | None
    rows: tuple[Row, ...]  # every combination, in enumeration order

    @property
    def valid(self) -> list[Row]:
        return [r for r in self.rows if r.reason is None]

    @property
    def invalid(self) -> list[Row]:
        return [r for r in self.rows if r.reason is not None]

    def ranked(self) -> list[Row]:
        """Valid rows within the budgets: the frontier first, then the most parameters for the fewest MACs."""
        inside = [r for r in self.valid if r.within]
        return sorted(inside, key=lambda r: (not r.frontier, -r.params, r.macs, r.memory_bytes or 0, r.index))

    def as_dict(self) -> dict[str, Any]:
        def values(row: Row) -> dict[str, Any]:
            return {a.name: v for a, v in zip(self.axes, row.values, strict=True)}

        def entry(row: Row) -> dict[str, Any]:
            out: dict[str, Any] = {"row": row.index, "values": values(row), "params": row.params, "macs": row.macs}
            if row.memory_bytes is not None:
                out |= {"memory_bytes": row.memory_bytes, "activation_bytes": row.activation_bytes}
            return out | {"frontier": row.frontier}

        return {
            "spec": self.spec,
            "img_size": None if self.img_size is None else size_value(self.img_size),
            "axes": [{"path": a.name, "values": list(a.values)} for a in self.axes],
            "budget": {"params": self.budget.params, "macs": self.budget.macs, "memory_bytes": self.budget.memory},
            "memory": None if self.memory is None else vars(self.memory),
            "combinations": len(self.rows),
            "valid": len(self.valid),
            "within_budget": len(self.ranked()),
            "rows": [entry(r) for r in self.ranked()],
            "over_budget": [entry(r) for r in self.valid if not r.within],
            "invalid": [{"row": r.index, "values": values(r), "reason": r.reason} for r in self.invalid],
        }


# --- parsing ---------------------------------------------------------------------------------------


def parse_number(text: str, what: str) -> int:
    """``5e9``, ``5G`` (10**9), ``16GiB`` / ``16Gi`` (2**30), ``86_000_000``."""
    raw = text.strip().replace("_", "").upper().removesuffix("B")
    scale = 1
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if raw.endswith(suffix):
            raw, scale = raw[: -len(suffix)], _SUFFIX[suffix]
            break
    try:
        value = float(raw) * scale
    except ValueError:
        raise SweepError(f"{what} {text}: not a number (e.g. 5e9, 5G, 16GiB)") from None
    if not math.isfinite(value) or value <= 0:
        raise SweepError(f"{what} {text}: must be positive")
    return int(value)


def _scalar(text: str) -> Any:
    """A value as YAML would read it, except that ``1e-6`` is a number and ``224x320`` a size [H, W]."""
    low = text.strip().lower()
    if "x" in low and parse_size(low) is not None:
        return parse_size(low)
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none", "~"):
        return None
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        # YAML reads `inf` and `nan` as text (its own are `.inf`, `.nan`), and no shape is infinite
        return value if math.isfinite(value) else text.strip()
    return text.strip()


def value_text(value: Any) -> str:
    """A swept value as the user writes it: a size (H, W) as ``224x320``."""
    return size_text(value) if isinstance(value, tuple) else str(value)


def _values(text: str, arg: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for item in text.split(","):
        if not item.strip():
            raise SweepError(f"--set {arg}: an empty value")
        m = _RANGE.match(item.strip())
        if m:
            lo, hi, step = int(m[1]), int(m[2]), int(m[3] or 1)
            if step < 1 or hi < lo or (hi - lo) // step + 1 > MAX_VALUES:
                raise SweepError(f"--set {arg}: range {item} must run upwards, at most {MAX_VALUES} values")
            out += range(lo, hi + 1, step)
        else:
            out.append(_scalar(item))
    if len(out) > MAX_VALUES:
        raise SweepError(f"--set {arg}: more than {MAX_VALUES} values")
    return tuple(dict.fromkeys(out))  # a value given twice is one combination


def parse_axis(arg: str, data: dict[str, Any]) -> Axis:
    """``PATH=V1,V2,...`` (or ``LO..HI[:STEP]``); PATH as ``archgen show`` prints the spec, list items by
    index or, for stages, by their ``key`` (``stages.blocks.depth``)."""
    name, sep, values = arg.partition("=")
    if not sep or not name.strip():
        raise SweepError(f"--set {arg}: write PATH=V1,V2,... (e.g. stages.0.depth=6,8,12)")
    path: list[str | int] = []
    node: Any = data
    parts = name.strip().split(".")
    i = 0
    while i < len(parts):
        part, last = parts[i], i == len(parts) - 1
        if isinstance(node, list):
            keys = [item.get("key") if isinstance(item, dict) else None for item in node]
            # a stage key may hold a dot (VOLO's `network.0`): the longest key that matches wins
            width = next((w for w in range(len(parts) - i, 0, -1) if ".".join(parts[i : i + w]) in keys), 0)
            if width:
                index = keys.index(".".join(parts[i : i + width]))
                i += width - 1
            elif part.isdigit() and int(part) < len(node):
                index = int(part)
            else:
                where = _name(path) or "the top"
                raise SweepError(f"--set {name}: no item '{part}' at {where} ({len(node)} items)")
            path.append(index)
            node = node[index]
        elif isinstance(node, dict) and (part in node or (last and part in fields_at(data, tuple(path)))):
            path.append(part)
            node = node.get(part)
        else:
            fields = fields_at(data, tuple(path))
            close = difflib.get_close_matches(part, fields, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(fields) or 'none, not a mapping'}"
            raise SweepError(f"--set {name}: no field '{part}' at {_name(path) or 'the top'}; {hint}")
        i += 1
    if not path:
        raise SweepError(f"--set {arg}: empty path")
    if path[0] in ("name", *NOT_INHERITED):
        raise SweepError(f"--set {name}: not a shape (a sweep names its rows and carries no published numbers)")
    return Axis(tuple(path), _values(values, name))


def _name(path: Path_ | list[str | int]) -> str:
    return ".".join(str(p) for p in path)


def base_data(loaded: LoadedSpec) -> dict[str, Any]:
    """The resolved spec as ``archgen show`` prints it, without what belongs to the published variant."""
    data = loaded.spec.model_dump(mode="json")
    for name in NOT_INHERITED:
        data.pop(name, None)
    return data


# --- running ---------------------------------------------------------------------------------------


def combinations(axes: tuple[Axis, ...]) -> Iterator[tuple[Any, ...]]:
    return itertools.product(*(a.values for a in axes))


def materialise(data: dict[str, Any], axes: tuple[Axis, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    for axis, value in zip(axes, values, strict=True):
        node: Any = out
        for part in axis.path[:-1]:
            node = node[part]
        if axis.path[-1] == "kind" and isinstance(node, dict) and node.get("kind") != value:
            node = _defaults_dropped(node)  # another part: the old one's defaults are not the new one's fields
            parent: Any = out
            for part in axis.path[:-2]:
                parent = parent[part]
            parent[axis.path[-2]] = node
        node[axis.path[-1]] = list(value) if isinstance(value, tuple) else value  # a size [H, W], as YAML says it
    return out


def _defaults_dropped(node: dict[str, Any]) -> dict[str, Any]:
    """The part's mapping with only the fields that differ from its kind's defaults."""
    kind = next((k for k in (*KINDS, *INTERNAL) if k.tag() == node.get("kind")), None)
    if kind is None:
        return dict(node)

    def default(name: str) -> Any:
        value = kind.model_fields[name].default
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    return {k: v for k, v in node.items() if k == "kind" or k not in kind.model_fields or v != default(k)}


def sweep(
    loaded: LoadedSpec,
    args: list[str],
    img_size: Size | None = None,
    budget: Budget = Budget(),
    memory: MemorySetting | None = None,
    max_combinations: int = MAX_COMBINATIONS,
    progress: Callable[[int, int], None] | None = None,
) -> Sweep:
    """Every combination counted; ``progress(done, total)`` is called as rows are counted."""
    data = base_data(loaded)
    axes = tuple(parse_axis(a, data) for a in args)
    if not axes:
        raise SweepError("give at least one --set PATH=V1,V2,...")
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise SweepError(f"--set {next(n for n in names if names.count(n) > 1)} given twice")
    total = math.prod(len(a.values) for a in axes)
    if total > max_combinations:
        raise SweepError(
            f"{total:,} combinations, more than {max_combinations:,} (fewer values, or --max-combinations {total})"
        )
    swept_size = any(a.path == ("img_size",) for a in axes)
    size = img_size or (None if swept_size else loaded.spec.img_size)
    label = loaded.source
    rows = []
    for index, values in enumerate(combinations(axes), 1):
        row = Row(index, values)
        _count(row, materialise(data, axes, values), label, size, memory)
        row.within = row.reason is None and budget.allows(row)
        rows.append(row)
        if progress is not None and (index % PROGRESS_EVERY == 0 or index == total):
            progress(index, total)
    _mark_frontier([r for r in rows if r.reason is None and r.within])
    return Sweep(loaded.spec.name, size, axes, budget, memory, tuple(rows))


def _count(row: Row, data: dict[str, Any], label: str, size: Size | None, memory: MemorySetting | None) -> None:
    located = Located(data, {(): Pos(label, 1, 1)})
    try:
        try:
            spec = Spec.model_validate(data)
        except ValidationError as exc:
            raise first_error(exc, located, label) from None
        ir = resolve(LoadedSpec(spec, label, located))
        size = size or spec.img_size
        total = ir.count(size)
        row.params, row.macs = total.params, total.macs
        if memory is not None:
            fp = ir.memory(size, memory.batch, memory.dtype, memory.checkpointing, memory.optimizer, memory.amp)
            row.memory_bytes, row.activation_bytes = fp.total_bytes, fp.activation_bytes
    except SpecError as exc:
        row.reason = f"{exc.field}: {exc.message}" if exc.field else exc.message


def _mark_frontier(rows: list[Row]) -> None:
    """Pareto frontier of capacity against cost: a row is on it unless an earlier row (fewer MACs, or as
    few and more parameters) has at least its parameters and at most its memory (when counted). Rows with
    equal numbers: the first stands for them all."""
    kept: list[Row] = []
    for r in sorted(rows, key=lambda r: (r.macs, -r.params, r.memory_bytes or 0, r.index)):
        mem = r.memory_bytes or 0
        r.frontier = not any(k.params >= r.params and (k.memory_bytes or 0) <= mem for k in kept)
        if r.frontier:
            kept.append(r)


# --- a row as a spec -------------------------------------------------------------------------------


def emit_data(loaded: LoadedSpec, axes: tuple[Axis, ...], row: Row) -> dict[str, Any]:
    """The row as a spec that ``extends:`` the swept one and restates only what changed: stages by their
    ``key`` (merged into the parent's stage), a list or a part whose ``kind`` changes given whole."""
    parent = loaded.spec.name
    base = base_data(loaded)
    data = materialise(base, axes, row.values)
    out: dict[str, Any] = {"extends": parent, "name": f"{parent}_sweep{row.index}"}
    settings = ", ".join(f"{a.name}={v}" for a, v in zip(axes, row.values, strict=True))
    out["title"] = f"{loaded.spec.title}, sweep row {row.index} ({settings})"
    for axis in axes:
        path = _restated(axis.path, data)
        node: Any = data
        for part in path:
            node = node[part]
        keyed = _keyed(path, base)
        target = out
        for part in keyed[:-1]:
            target = target.setdefault(part, {})
        target[keyed[-1]] = copy.deepcopy(node)
    return out


def emit_text(loaded: LoadedSpec, axes: tuple[Axis, ...], row: Row) -> tuple[str, str]:
    """The file name and text of ``emit_data``'s spec, as ``archgen sweep --emit`` writes it."""
    from archgen.loader import dump_yaml

    data = emit_data(loaded, axes, row)
    text = "# written by archgen sweep --emit\n" + dump_yaml(data)
    return f"{data['name']}.yaml", text


def _restated(path: Path_, data: dict[str, Any]) -> Path_:
    """The shortest prefix of ``path`` the child must give whole: merging stops at a list (other than the
    stages, merged by key) and at a mapping whose ``kind`` is what changes."""
    if path[-1] == "kind":
        path = path[:-1]
    node: Any = data
    for i, part in enumerate(path):
        if isinstance(node, list) and i != 1:
            return path[:i]
        node = node[part]
    return path


def _keyed(path: Path_, data: dict[str, Any]) -> list[str]:
    """``stages.<i>`` written as the stage's key in the parent (``data``), as a child spec merges stages (a
    swept ``key`` renames the stage it is merged into)."""
    out = [str(p) for p in path]
    if len(path) > 1 and path[0] == "stages":
        out[1] = data["stages"][path[1]]["key"]
    return out

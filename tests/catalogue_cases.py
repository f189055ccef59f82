"""Every option of every part, read from the parts' own pydantic fields, and the small specs they are tried in.

Nothing here names an option: a field's type says which values it takes (a bool both ways, every value of a
Literal, a norm as none / layernorm / rmsnorm and each of its own options, a number at one other valid value,
an optional sub-model absent and present with each of its options). A part added to the catalogue, or an
option added to a part, is enumerated with no edit here. tests/test_catalogue.py builds each case and
checks it; tests/test_properties.py draws from the same values.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import tempfile
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ForwardRef, Literal

import annotated_types as at
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from archgen import specs
from archgen.base import Op, Part, _numeric
from archgen.catalogue import KINDS, SLOT_TYPES
from archgen.compiler import resolve
from archgen.errors import SpecError
from archgen.loader import dump_yaml
from archgen.norms import Act, Norm
from archgen.schema import Spec

# A value for a required field, by name, small so that every model stays tiny; a required field not listed
# takes its smallest valid value (a number) or each of its values (a Literal, e.g. a norm's `kind`).
REQUIRED: dict[str, Any] = {
    "patch_size": 4,
    "dim": 32,
    "hidden": 8,
    "channels": 8,
    "stride": 2,
    "heads": 2,
    "mlp_ratio": 2.0,
    "depth": 1,
    "init": 1.0e-5,
    "key": "extra",
    "feedforward": {"kind": "mlp"},
    "block": [{"op": "mhsa"}, {"op": "mlp"}],
    "window": 3,  # on the 8x8 grid: padded to 9x9 windows, shifted by 1 in odd blocks
}
# Optional fields a part's defaults need filled in to work at all (a stage of attention blocks needs heads, and
# a block unless it has a cycle of them).
WANTED = ("heads", "mlp_ratio", "block")
# Candidates for a number that has no default, tried in order; the first the field's bounds allow is used.
NUMBERS = (1.0e-5, 2, 3, 4, 0.5, 16)
NAME = "alt"  # a name for an optional attribute-name field


def _resolved(annotation: Any) -> Any:
    """A field annotation with the catalogue's forward references (``OpSlot | None``) resolved."""
    if isinstance(annotation, ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        annotation = eval(annotation, dict(SLOT_TYPES))
    return annotation


def _bounds(metadata: list[Any]) -> list[Any]:
    out = []
    for item in metadata:
        out += _bounds(item.metadata) if hasattr(item, "metadata") and not isinstance(item, at.BaseMetadata) else []
        out.append(item)
    return out


def _fits(value: float, metadata: list[Any]) -> bool:
    for m in _bounds(metadata):
        if (
            (isinstance(m, at.Ge) and not value >= m.ge)
            or (isinstance(m, at.Gt) and not value > m.gt)
            or (isinstance(m, at.Le) and not value <= m.le)
            or (isinstance(m, at.Lt) and not value < m.lt)
        ):
            return False
    return True


def _pattern(metadata: list[Any]) -> str | None:
    return next((m.pattern for m in _bounds(metadata) if getattr(m, "pattern", None)), None)


def _number(kind: type, default: Any, metadata: list[Any]) -> list[Any]:
    """Valid values other than ``default``, the likeliest to fit first (``variants`` keeps the first, or the
    first a part accepts)."""
    tries = NUMBERS if default is None else (default * 2, default + 1, default + 2, default / 2, default - 1)
    out = []
    for v in tries:
        v = kind(v) if kind is float or float(v).is_integer() else None
        if v is not None and v != default and v not in out and _fits(v, metadata):
            out.append(v)
    return out


def _models(tp: Any) -> list[type[BaseModel]]:
    """The pydantic models a (union) type is made of, or [] if it is not one."""
    tp = _resolved(tp)
    if typing.get_origin(tp) is Annotated:
        return _models(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _models(a)]
    return [tp] if inspect.isclass(tp) and issubclass(tp, BaseModel) else []


def bases(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The smallest mappings the model accepts: its required fields filled in (one per value of a required
    Literal such as a norm's or a part's `kind`)."""
    out: list[dict[str, Any]] = [{}]
    for name, field in model.model_fields.items():
        if not field.is_required() and not (name in WANTED and field.default in (None, ())):
            continue
        tp = _resolved(field.annotation)
        if name in REQUIRED:
            values = [REQUIRED[name]]
        elif typing.get_origin(tp) is Literal:
            values = list(typing.get_args(tp))
        elif tp in (int, float):
            values = _number(tp, None, field.metadata)
        else:
            values = [bases(_models(tp)[0])[0]]
        out = [{**b, name: v} for b in out for v in values]
    return out


def options(annotation: Any, metadata: list[Any], default: Any) -> list[Any]:
    """Every value a field of this type takes, other than ``default``, written as a spec writes it."""
    tp = _resolved(annotation)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return options(args[0], [*args[1:], *metadata], default)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        out: list[Any] = []
        if type(None) in args and default is not None:
            out.append("none" if _models(tp) == [Norm] else None)
        if len(_models(tp)) > 1:  # a tagged union of parts (an op slot): each part with its defaults
            given = _mapping(default).get("kind") if isinstance(default, (str, dict)) else None
            return out + [{"kind": m.tag()} for m in _models(tp) if m.tag() != getattr(default, "kind", given)]
        for a in members:
            out += [v for v in options(a, metadata, default) if v not in out]
        return out
    if tp is bool:
        return [True, False] if default is None else [not default]
    if origin is Literal:
        return [v for v in args if v != default]
    if tp in (int, float):
        return _number(tp, default, metadata)
    if tp is str:
        pattern = _pattern(metadata)
        return [NAME] if default is None and (pattern is None or re.match(pattern, NAME)) else []
    if origin is tuple and len(args) == 2 and all(_numeric(a) for a in args):  # (h, w): two sides that differ
        h = default if isinstance(default, int) else NUMBERS[1]
        return [[h, w] for w in options(args[1], [], h)[:1]]
    if origin is tuple and args and typing.get_origin(args[0]) is Literal:
        return [[v] for v in typing.get_args(args[0])]
    if inspect.isclass(tp) and issubclass(tp, Norm):
        given = default.model_dump(exclude_defaults=True) if isinstance(default, Norm) else _mapping(default)
        return [v for v in norm_values() if _mapping(v) != given]
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        given = default.model_dump(exclude_defaults=True) if isinstance(default, BaseModel) else None
        start = bases(tp)[0] if given is None else given
        return ([] if given is not None else [start]) + [v for _, v in variants(tp, start)]
    return []  # lists of parts (a branch's `ops`, `paths`) and of names are block structures: see below


def norm_values() -> list[Any]:
    """Every norm a spec can write: each kind by name, then each kind with each of its options changed."""
    kinds = typing.get_args(Norm.model_fields["kind"].annotation)
    return [*kinds, *(v for k in kinds for _, v in variants(Norm, {"kind": k}))]


def _mapping(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value


def variants(model: type[BaseModel], base: dict[str, Any], every_number: bool = False) -> list[tuple[str, dict]]:
    """One factor at a time from ``base``: (label, mapping) for each field and each value it takes; a number
    at one other value (``every_number``: each candidate, for the caller to pick one that fits)."""
    out = []
    for name, field in model.model_fields.items():
        if name == "kind":
            continue
        default = base.get(name, None if field.default is PydanticUndefined else field.default)
        values = options(field.annotation, field.metadata, default)
        if _numeric(field.annotation) and not every_number:  # one number, and one (h, w) pair where it takes one
            values = values[:1] + [v for v in values[1:] if isinstance(v, list)][:1]
        out += [(f"{name}={label(value)}", {**base, name: value}) for value in values]
    return out


def label(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")).replace('"', "")


# --- the specs a part is tried in -------------------------------------------------------------------------


def spec(name: str, stem: dict, stages: list[dict], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "family": "catalogue",
        "title": f"{name} (catalogue test)",
        "paper": "catalogue test",
        "class_name": "Net",
        "img_size": 32,
        "in_chans": 3,
        "num_classes": 5,
        "norm_eps": 1.0e-6,
        "stem": stem,
        "stages": stages,
        "norm": "layernorm",
        "head": {"kind": "token"},
        **extra,
    }


PATCH = {"kind": "patch_embed", "patch_size": 4, "dim": 32}
GRID_STEM = {"kind": "volo_conv_stem", "hidden": 8, "patch_size": 4, "dim": 32}
STAGE = {"depth": 2, "heads": 2, "mlp_ratio": 2.0}
WITH_CLS = {"prefix_tokens": {"cls": True}, "pos_embed": {"kind": "learned"}}


def _seq(block: list[dict], **extra: Any) -> dict[str, Any]:
    return spec("seq", PATCH, [{"key": "blocks", **STAGE, "block": block}], **{**WITH_CLS, **extra})


def _grid(block: list[dict], **extra: Any) -> dict[str, Any]:
    return spec("grid", GRID_STEM, [{"key": "blocks", **STAGE, "block": block}], head={"kind": "avg"}, **extra)


def _cls_stage(block: list[dict]) -> dict[str, Any]:
    mixer = {"key": "blocks", **STAGE, "block": [{"op": "mhsa"}, {"op": "mlp"}]}
    stage = {"key": "cls_blocks", **STAGE, "joins": ["cls"], "updates": "cls", "block": block}
    return spec("cls", PATCH, [mixer, stage], prefix_tokens={"cls": True})


def op_homes(op: Op) -> dict[str, tuple[dict[str, Any], tuple]]:
    """Blocks an op fits in, by where its tokens come from (its properties may depend on its options): a
    sequence with the class token, the class token alone, the patch grid of a conv stem. Each: the spec and
    the path of the op's mapping in it."""
    out = {}
    if op.writes_first or op.reads == "token":
        first = op.writes_first
        block = [{"op": "OP" if first else "class_attention"}, {"op": "mlp" if first else "OP"}]
        out["cls"] = (_cls_stage(block), ("stages", 1, "block", 0 if first else 1, "op"))
    if not op.writes_first:
        out["seq"] = (_seq([{"op": "OP"}, {"op": "mhsa"}, {"op": "mlp"}]), ("stages", 0, "block", 0, "op"))
    if op.reads in ("grid", "token"):
        out["grid"] = (_grid([{"op": "OP"}, {"op": "mlp"}]), ("stages", 0, "block", 0, "op"))
    return out


def _contexts(slot: str) -> list[tuple[dict[str, Any], tuple]]:
    """Specs a part of a slot other than `op` is tried in, in order; the first its defaults fit is its home."""
    plain = [{"op": "mhsa"}, {"op": "mlp"}]
    if slot == "stem":
        return [(_seq(plain), ("stem",))]
    if slot == "pos_embed":
        return [(_seq(plain), ("pos_embed",)), (_grid([{"op": "mlp"}]), ("pos_embed",))]
    if slot == "rope":  # a rotary table needs an attention that uses it
        return [(_seq([{"op": {"kind": "mhsa", "rope": True}}, {"op": "mlp"}]), ("rope",))]
    if slot == "head":
        return [
            (_seq(plain, prefix_tokens={"cls": True, "dist": True}), ("head",)),
            (_grid([{"op": "mlp"}]), ("head",)),
        ]
    if slot == "stage":
        collect = _seq(plain)
        collect["stages"][0]["collect_cls"] = True
        grid = _grid([{"op": "mlp"}])
        after = {"key": "after", **STAGE, "block": [{"op": "mlp"}]}
        grid["stages"] += ["PART", after]
        collect["stages"].append("PART")
        seq = _seq(plain)
        return [(seq, ("stages", 0)), (grid, ("stages", 1)), (collect, ("stages", 1))]
    raise AssertionError(f"no context for parts of slot {slot!r}: add one to tests/catalogue_cases.py")


@dataclass(frozen=True)
class Case:
    """One spec to build: ``part`` (what is varied), ``where`` (the home), ``option`` (the factor changed)."""

    part: str
    where: str
    option: str
    data: dict[str, Any]
    path: tuple = ()  # where the varied mapping stands in ``data`` (a part's, a branch's; () the spec's own)

    @property
    def id(self) -> str:
        return f"{self.part}-{self.where}-{self.option}"


def put(data: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def refusal(data: dict[str, Any], folder: Path) -> str | None:
    """The one-line error the spec language gives for ``data``, or None if it compiles."""
    path = folder / f"{data['name']}.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    try:
        ir = resolve(specs.load(path))
        ir.count(data["img_size"])
    except SpecError as e:
        return str(e)
    return None


def _fits_in(data: dict[str, Any], folder: Path) -> bool:
    return refusal(data, folder) is None


def _one_number_each(kind: type[Part], cases: list[Case], folder: Path) -> Iterator[Case]:
    """Of the candidates for each number field, in each home, the first the part accepts (or the first,
    whose refusal the test then checks)."""
    numbers = {name for name, f in kind.model_fields.items() if _numeric(f.annotation)}
    picked: dict[tuple[str, str], Case] = {}
    for case in cases:
        field, _, value = case.option.partition("=")
        if field not in numbers or case.option == "default":
            yield case
            continue
        group = (case.where, field, value.startswith("["))  # a number, and an (h, w) pair apart
        if group not in picked or (refusal(picked[group].data, folder) and not refusal(case.data, folder)):
            picked[group] = case
    yield from picked.values()


def _part_cases(kind: type[Part], folder: Path) -> list[Case]:
    return list(_one_number_each(kind, list(_every_case(kind, folder)), folder))


def _every_case(kind: type[Part], folder: Path) -> Iterator[Case]:
    base = bases(kind)[0]
    all_ = [("default", base), *variants(kind, base, every_number=True)]
    if issubclass(kind, Op):
        default = kind.model_validate(base)
        for option, mapping in all_:
            try:
                op = kind.model_validate(mapping)
            except ValueError:
                op = default  # refused by the op itself: tried where its defaults fit, to see the message
            for where, (data, path) in op_homes(op).items():
                yield Case(kind.tag(), where, option, put(data, path, mapping), path)
        return
    contexts = _contexts(kind.slot)
    homes = [(data, path) for data, path in contexts if _fits_in(put(data, path, base), folder)]
    assert homes, f"{kind.tag()}: no test context fits its defaults; add one to tests/catalogue_cases.py"
    for option, mapping in all_:
        # an option its home refuses is tried where it fits (prefix tokens crossing a downsample need them)
        fits = [(d, p) for d, p in contexts if option != "default" and _fits_in(put(d, p, mapping), folder)]
        data, path = homes[0] if not fits or _fits_in(put(*homes[0], mapping), folder) else fits[0]
        where = "grid" if data["name"] == "grid" else "seq"
        yield Case(kind.tag(), where, option, put(data, path, mapping), path)


def _norm_places() -> Iterator[Case]:
    """A norm value in every place one stands outside a part: the spec's own norm fields (`norm_pre`,
    the final `norm`) with a token head, and the final norm as an average head's `fc_norm` (and before
    the pooling, with `fc_norm: false`)."""
    plain = [{"op": "mhsa"}, {"op": "mlp"}]
    for name, field in Spec.model_fields.items():
        if _models(field.annotation) != [Norm]:
            continue
        data = _seq(plain)
        for value in options(field.annotation, field.metadata, data.get(name)):
            yield Case("spec", "seq", f"{name}={label(value)}", put(data, (name,), value))
    for fc_norm in (True, False):
        head = {"kind": "avg", "fc_norm": fc_norm}
        for value in options(Spec.model_fields["norm"].annotation, [], "layernorm"):
            data = _seq(plain, head=head, norm=value)
            yield Case("spec", f"avg_fc_norm_{str(fc_norm).lower()}", f"norm={label(value)}", data)


def _structures() -> Iterator[Case]:
    """A branch's forms beyond one op: parallel ops summed from one norm (ViT-22B) and parallel paths,
    each with its own norm and LayerScale (timm's ParallelThingsBlock), in a sequence and a class stage."""
    from archgen.blocks.stage import Branch

    path = ("stages", 0, "block", 0)
    base = {"op": "mhsa"}
    own = [(o, m) for o, m in variants(Branch, base) if not o.startswith("op=")]  # ops: enumerated on their own
    for option, mapping in [("default", base), *own]:
        yield Case("branch", "seq", option, put(_seq([{"op": "mhsa"}, {"op": "mlp"}]), path, mapping), path)
    parallel = [
        ("ops=mhsa+mlp", {"ops": ["mhsa", "mlp"]}),
        ("ops=mhsa+mlp,out_norm", {"ops": ["mhsa", "mlp"], "out_norm": "rmsnorm", "layerscale": {"init": 0.1}}),
        ("ops=mhsa+outlook", {"ops": ["mhsa", "outlook"]}),
        ("paths=mhsa+outlook", {"key": "attns", "paths": [{"op": "mhsa"}, {"op": "outlook"}]}),
        ("paths=mhsa+mhsa", {"key": "attns", "paths": [{"op": "mhsa"}, {"op": "mhsa", "norm": "rmsnorm"}]}),
        (
            "paths=ls",
            {"key": "ffns", "paths": [{"op": "mlp", "layerscale": {"init": 0.1}}, {"op": "mlp", "norm": "none"}]},
        ),
    ]
    for option, mapping in parallel:
        yield Case("branch", "seq", option, put(_seq([{"op": "mhsa"}, {"op": "mlp"}]), path, mapping), path)
    # blocks that differ within a stage: a cycle of patterns, on the sequence (a grid op wrapped) and on the grid
    attention, local = [{"op": "mhsa"}, {"op": "mlp"}], [{"op": {"kind": "lsa", "ws": 3}}, {"op": "mlp"}]
    unpadded = [{"op": {"kind": "lsa", "ws": 4}}, {"op": "mlp"}]  # the 8x8 grid in 2x2 windows
    outlook = {"block": [{"op": "outlook"}, {"op": "mlp", "layerscale": {"init": 0.1}}]}
    for where, data, cycle in [
        ("seq", _seq(attention), [{"block": attention}, outlook]),
        ("grid", _grid(attention[1:]), [{"block": local}, {"block": [{"op": "mlp"}]}, {"block": unpadded}]),
    ]:
        stage = {"key": "blocks", **STAGE, "depth": 4, "cycle": cycle}
        yield Case("stage", where, f"cycle={len(cycle)}", put(data, ("stages", 0), stage), ("stages", 0))


def catalogue_names(annotation: Any) -> list[str]:
    """The names a field of this type takes from a catalogue (a norm's kinds and `none`, the parts of a
    slot, the activations), in the order an error lists them; [] for any other field."""
    models = _models(annotation)
    if models == [Norm]:
        return [*typing.get_args(Norm.model_fields["kind"].annotation), "none"]
    if len(models) > 1:
        return [m.tag() for m in models]
    tp = _resolved(annotation)
    while typing.get_origin(tp) is Annotated or type(None) in typing.get_args(tp):
        tp = typing.get_args(tp)[0]
    return list(typing.get_args(Act)) if tp == Act else []


@cache
def cases() -> tuple[Case, ...]:
    """Every case, in catalogue order (a part's defaults first, then one option changed at a time)."""
    with tempfile.TemporaryDirectory() as folder:
        out = [c for kind in KINDS for c in _part_cases(kind, Path(folder))]
    return (*out, *_structures(), *_norm_places())

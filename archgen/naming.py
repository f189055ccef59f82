"""Class names in a generated file: one class per distinct definition, named for what it is.

An op's class keeps its usual name (``Attention``) unless two different definitions of it meet in one
model; then each is named by the options that tell them apart (``AttentionQkvBias``,
``AttentionNoQkvBias``). A block class is named by its ops (``Block``, ``ReAttentionBlock``,
``ClassAttentionBlock``); where that is not enough, by the features that differ (``LayerScaleBlock``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from typing import Any

from archgen.base import Model, Op, Part


def op_names(ops: Sequence[Op]) -> dict[str, str]:
    """identity -> class name for every op."""
    by_name: dict[str, dict[str, Op]] = {}
    for op in ops:
        by_name.setdefault(op.class_name, {})[op.identity()] = op
    names: dict[str, str] = {}
    for base, variants in by_name.items():
        if len(variants) == 1:
            names.update(dict.fromkeys(variants, base))
            continue
        fields = [dict(ast.literal_eval(identity)) for identity in variants]
        taken: set[str] = set()
        for identity, values in zip(variants, fields, strict=True):
            names[identity] = _unique(base + _words(values, fields), taken)
    return names


def _unique(name: str, taken: set[str]) -> str:
    """``name``, numbered where words could not tell two definitions apart (an unset option beside ``False``)."""
    out, i = name, 2
    while out in taken:
        out, i = f"{name}{i}", i + 1
    taken.add(out)
    return out


def _words(values: dict[str, Any], variants: list[dict[str, Any]]) -> str:
    """The words that set ``values`` apart among ``variants``: a field that differs, by its value; a norm value
    by its kind and, among norms of one kind, by the parameter that differs (``NormLayernormEps1E05``)."""
    out = ""
    for key in sorted(k for k in values if len({repr(v.get(k)) for v in variants}) > 1):
        value = values[key]
        if not isinstance(value, dict):
            out += _word(key, value)
            continue
        kin = [v[key] for v in variants if isinstance(v.get(key), dict)]
        out += _word(key, True) + (_words(value, kin) if len(kin) > 1 else _word("", value.get("kind")))
    return out


def _word(field: str, value: Any) -> str:
    camel = "".join(p.title() for p in field.split("_"))
    if isinstance(value, bool) or value is None:
        return camel if value else f"No{camel}"
    return camel + "".join(p.title() for p in re.split(r"[^0-9A-Za-z]+", str(value)) if p)


def block_names(walked: Sequence[Any], m: Model) -> dict[str, str]:
    """identity -> class name for every block stage in ``walked``: the labels of its ops (``ReAttention``),
    and where two compositions share those, the features that set them apart (``LayerScale``)."""
    found: dict[str, tuple[str, str]] = {}  # identity -> (name from the ops, features)
    for w in walked:
        for stage in w.kind.patterns() if hasattr(w.kind, "patterns") else ():  # a class per kind of block
            ops = "".join(dict.fromkeys(op.label for op in stage.ops()))
            features = (
                ("Parallel" if any(b.ops or b.paths for b in stage.block) else "")
                + ("LayerScale" if any(stage.ls(b) for b in stage.block) else "")
                + ("Scaled" if any(b.scale != 1.0 for b in stage.block) else "")
                + ("Class" if stage.updates == "cls" else "")
                + ("Grid" if stage.layout(w.s_in) == "grid" else "")
            )
            found.setdefault(stage.identity(w.s_in, m), (ops, features))
    names: dict[str, str] = {}
    taken: set[str] = set()
    for identity, (ops, features) in found.items():
        shared = sum(other == ops for other, _ in found.values()) > 1
        names[identity] = _unique((features if shared else "") + ops + "Block", taken)
    return names


def parts(kind: Part) -> list[Part]:
    """The part and the parts its classes use, leaf first (the order the emitter writes them in)."""
    out: list[Part] = []
    for helper in kind.helpers():
        out.extend(parts(helper))
    return [*out, kind]


def path_class(op_class: str) -> str:
    """The class of a parallel path around an op of class ``op_class`` (``AttentionPath``)."""
    return f"{op_class}Path"


def class_names(walked: Sequence[Any], m: Model, head: Part) -> dict[str, str]:
    """Every class name naming gives the model's ops, parallel paths and blocks, and which it names."""
    ops = [p for w in [*(w.kind for w in walked), head] for p in parts(w) if isinstance(p, Op)]
    named = op_names(ops)
    branches = [b for w in walked if hasattr(w.kind, "branches") for b in w.kind.branches()]
    paths = {path_class(named[p.op.identity()]) for b in branches for p in b.paths if p.op is not None}
    blocks = dict.fromkeys(block_names(walked, m).values(), "block")
    return dict.fromkeys(named.values(), "op") | dict.fromkeys(sorted(paths), "path") | blocks

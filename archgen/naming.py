"""Class names in a generated file: one class per distinct definition, named for what it is.

An op's class keeps its usual name (``Attention``) unless two different definitions of it meet in one
model; then each is named by the options that tell them apart (``AttentionQkvBias``,
``AttentionNoQkvBias``). A block class is named by its ops (``Block``, ``ReAttentionBlock``,
``ClassAttentionBlock``); where that is not enough, by the features that differ (``LayerScaleBlock``).
"""

from __future__ import annotations

import ast
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
        differing = sorted(k for k in fields[0] if len({repr(f.get(k)) for f in fields}) > 1)
        for identity, values in zip(variants, fields, strict=True):
            names[identity] = base + "".join(_word(k, values[k]) for k in differing)
    return names


def _word(field: str, value: Any) -> str:
    camel = "".join(p.title() for p in field.split("_"))
    if isinstance(value, dict) and "kind" in value:  # a value with parameters (a norm) by its kind
        value = value["kind"]
    if isinstance(value, bool) or value is None:
        return camel if value else f"No{camel}"
    return camel + "".join(p.title() for p in str(value).replace(".", "_").split("_"))


def block_names(walked: Sequence[Any], m: Model) -> dict[str, str]:
    """identity -> class name for every block stage in ``walked``: the labels of its ops (``ReAttention``),
    and where two compositions share those, the features that set them apart (``LayerScale``)."""
    found: dict[str, tuple[str, str]] = {}  # identity -> (name from the ops, features)
    for w in walked:
        stage = w.kind
        if not hasattr(stage, "code"):
            continue
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
    for identity, (ops, features) in found.items():
        shared = sum(other == ops for other, _ in found.values()) > 1
        base = (features if shared else "") + ops + "Block"
        name, i = base, 2
        while name in names.values():
            name, i = f"{base}{i}", i + 1
        names[identity] = name
    return names


def parts(kind: Part) -> list[Part]:
    """The part and the parts its classes use, leaf first (the order the emitter writes them in)."""
    out: list[Part] = []
    for helper in kind.helpers():
        out.extend(parts(helper))
    return [*out, kind]


def class_names(walked: Sequence[Any], m: Model, head: Part) -> dict[str, str]:
    """Every class name naming gives the model's ops and blocks, and which of the two it names."""
    ops = [p for w in [*(w.kind for w in walked), head] for p in parts(w) if isinstance(p, Op)]
    return dict.fromkeys(op_names(ops).values(), "op") | dict.fromkeys(block_names(walked, m).values(), "block")

"""The catalogue stays honest: every part is one module with its template beside it, a counter, described
fields and a spec that uses it; and every op works inside a block wherever its tokens fit, counted exactly.

A new op needs nothing here: the tests below draw it from the registry and build blocks around it.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from archgen.base import Op, Part, Step
from archgen.catalogue import INTERNAL, KINDS
from archgen.emit import environment
from archgen.heads.head import Head
from conftest import ALL, assert_counts_exact, compile_data, ir_of, saved_activation_bytes

ROOT = Path(__file__).resolve().parent.parent
MACROS = {"op": ("classes",), "head": ("classes", "init", "forward_head", "reset")}
STEP_MACROS = ("classes", "init", "forward")
OPS = [k for k in KINDS if issubclass(k, Op)]


def _used() -> set[str]:
    used: set[str] = set()

    def visit(part: Part) -> None:
        used.add(part.kind)  # type: ignore[attr-defined]
        for helper in part.helpers():
            visit(helper)

    for path in ALL:
        ir = ir_of(path)
        for w in ir.walk(ir.spec.img_size):
            visit(w.kind)
        visit(ir.head)
    return used


@pytest.mark.parametrize("kind", [*KINDS, *INTERNAL], ids=lambda k: k.__name__)
def test_part_has_its_template_with_macros(kind: type[Part]) -> None:
    module = Path(inspect.getfile(kind))
    assert (ROOT / "archgen" / kind.template()) == module.with_suffix(".j2"), kind.__name__
    assert module.with_suffix(".j2").is_file(), f"{kind.__name__}: template {kind.template()} missing"
    macros = environment().get_template(kind.template()).module
    wanted = MACROS.get(kind.slot, STEP_MACROS if issubclass(kind, Step) else ("classes",))
    for macro in wanted:
        assert hasattr(macros, macro), f"{kind.__name__}: {kind.template()} lacks macro {macro}"


def test_one_part_per_module() -> None:
    modules = [k.__module__ for k in (*KINDS, *INTERNAL)]
    assert len(modules) == len(set(modules))


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_part_has_its_own_counter_and_descriptions(kind: type[Part]) -> None:
    if not issubclass(kind, Head):  # heads count their classifiers in one shared place
        base = Op if issubclass(kind, Op) else Step
        assert getattr(kind, "count", None) is not getattr(base, "count", None), f"{kind.__name__} has no count()"
        assert getattr(kind, "memory", None) is not getattr(base, "memory", None), f"{kind.__name__} has no memory()"
    for name, field in kind.model_fields.items():
        assert field.description, f"{kind.__name__}.{name} has no description"


@pytest.mark.parametrize("kind", [*KINDS, *INTERNAL], ids=lambda k: k.__name__)
def test_part_is_exercised_by_a_spec(kind: type[Part]) -> None:
    assert kind.tag() in _used(), f"no spec in specs/ or tests/hybrids/ uses kind {kind.tag()!r}"


def test_kind_names_are_unique() -> None:
    names = [k.tag() for k in (*KINDS, *INTERNAL)]
    assert len(names) == len(set(names))


def _spec(name: str, stem: dict, stages: list[dict], **extra: object) -> dict:
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
        "norm": {"kind": "layernorm"},
        "head": {"kind": "token"},
        **extra,
    }


def _placements(op: type[Op]) -> dict[str, dict]:
    """Blocks the op fits in, by where its tokens come from: a sequence with the class token, the class
    token alone, the patch grid of a conv stem."""
    tag = op.tag()
    patch = {"kind": "patch_embed", "patch_size": 4, "dim": 16}
    stage = {"depth": 2, "heads": 2, "mlp_ratio": 2.0}
    mixer = {"key": "blocks", **stage, "block": [{"op": "mhsa"}, {"op": "mlp"}]}
    with_cls = {"prefix_tokens": {"cls": True}, "pos_embed": {"kind": "learned"}}
    out = {}
    if op.writes_first or op.reads == "token":
        first = tag if op.writes_first else "class_attention"
        block = [{"op": first}, {"op": tag if op.reads == "token" else "mlp"}]
        cls_stage = {"key": "cls_blocks", **stage, "joins": ["cls"], "updates": "cls", "block": block}
        out["class_token_stage"] = _spec(f"cat_{tag}_cls", patch, [mixer, cls_stage], prefix_tokens={"cls": True})
    if not op.writes_first:
        own = {"key": "blocks", **stage, "block": [{"op": tag}, {"op": "mhsa"}, {"op": "mlp"}]}
        out["sequence_with_class_token"] = _spec(f"cat_{tag}_seq", patch, [own], **with_cls)
    if op.reads in ("grid", "token"):
        grid = {"kind": "volo_conv_stem", "hidden": 8, "patch_size": 4, "dim": 16}
        own = {"key": "blocks", **stage, "block": [{"op": tag}, {"op": "mlp"}]}
        out["grid"] = _spec(f"cat_{tag}_grid", grid, [own], head={"kind": "avg"})
    return out


CASES = [(op, where, data) for op in OPS for where, data in _placements(op).items()]


@pytest.mark.parametrize(("op", "where", "data"), CASES, ids=[f"{o.tag()}-{w}" for o, w, _ in CASES])
def test_every_op_works_in_a_block(op: type[Op], where: str, data: dict, tmp_path: Path) -> None:
    op.model_validate({"kind": op.tag()})  # every option has a default, so `op: <kind>` is enough
    ir, _, module = compile_data(data, tmp_path)
    build = getattr(module, data["name"])
    assert_counts_exact(f"{op.tag()} in {where}", ir, build, 32)
    model = build().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all(), f"{op.tag()} in {where}"
    # training memory: what autograd saves, as traced by the op's memory(), in float32 and under autocast
    for amp, autocast in ((None, None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        for ckpt in (False, True):
            saved = saved_activation_bytes(model, torch.float32, ckpt, 2, 32, autocast=autocast)
            analytic = ir.memory(32, 2, "float32", ckpt, amp=amp).activation_bytes
            where_ = f"{op.tag()} in {where} --amp {amp} checkpointing={ckpt}"
            assert analytic == saved, f"{where_}: {analytic:,} != saved {saved:,}"

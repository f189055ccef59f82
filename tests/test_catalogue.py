"""The block-kind catalogue stays honest: every kind has a template, a counter and a spec that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from archgen.emit import environment
from archgen.kinds import INTERNAL, KINDS
from archgen.kinds.base import Kind, Step
from archgen.kinds.heads import Head
from conftest import ALL, ir_of

MACROS = {"step": ("classes", "init", "forward"), "head": ("classes", "init", "forward_head", "reset")}


def _kind_name(kind: type[Kind]) -> str:
    return kind.model_fields["kind"].annotation.__args__[0]  # type: ignore[union-attr]


def _used() -> set[str]:
    used: set[str] = set()

    def visit(kind: Kind) -> None:
        used.add(kind.kind)  # type: ignore[attr-defined]
        for child in kind.children():
            visit(child)

    for path in ALL:
        ir = ir_of(path)
        for placed in ir.steps:
            visit(placed.kind)
        visit(ir.head)
    return used


@pytest.mark.parametrize("kind", [*KINDS, *INTERNAL], ids=lambda k: k.__name__)
def test_kind_has_template_with_macros(kind: type[Kind]) -> None:
    path = Path(__file__).resolve().parent.parent / "archgen" / "kinds" / kind.template
    assert path.is_file(), f"{kind.__name__}: template {kind.template} missing"
    module = environment().get_template(kind.template).module
    role = "head" if issubclass(kind, Head) else "step" if issubclass(kind, Step) else None
    for macro in MACROS.get(role, ("classes",)):
        assert hasattr(module, macro), f"{kind.__name__}: {kind.template} lacks macro {macro}"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_kind_has_its_own_counter_and_descriptions(kind: type[Kind]) -> None:
    base = Head if issubclass(kind, Head) else Step if issubclass(kind, Step) else Kind
    assert getattr(kind, "count", None) is not getattr(base, "count", None), f"{kind.__name__} has no count()"
    for name, field in kind.model_fields.items():
        assert field.description, f"{kind.__name__}.{name} has no description"


@pytest.mark.parametrize("kind", [*KINDS, *INTERNAL], ids=lambda k: k.__name__)
def test_kind_is_exercised_by_a_spec(kind: type[Kind]) -> None:
    assert _kind_name(kind) in _used(), f"no spec in specs/ or tests/hybrids/ uses kind {_kind_name(kind)!r}"


def test_kind_names_are_unique() -> None:
    names = [_kind_name(k) for k in (*KINDS, *INTERNAL)]
    assert len(names) == len(set(names))

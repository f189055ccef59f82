"""The editor schema and the field reference are generated, committed and drift-checked."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from archgen.docs import emit_docs
from conftest import ROOT, SPECS


def test_committed_docs_equal_what_build_writes() -> None:
    for name, text in emit_docs().items():
        assert (ROOT / name).read_text(encoding="utf-8") == text, f"{name} is stale; run archgen build --all"


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_points_editors_at_the_schema_and_validates(path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=schema.json\n"), path.name
    schema = json.loads((ROOT / "specs" / "schema.json").read_text(encoding="utf-8"))
    data = yaml.safe_load(text)
    if "extends" not in data:  # a child alone is partial; its merged form is what the compiler validates
        jsonschema.validate(data, schema)


def test_schema_rejects_what_the_compiler_rejects() -> None:
    schema = json.loads((ROOT / "specs" / "schema.json").read_text(encoding="utf-8"))
    data = yaml.safe_load((ROOT / "specs" / "vit_b16.yaml").read_text(encoding="utf-8"))
    data["stages"][0]["dropout"] = 0.1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


def test_reference_documents_every_kind_field() -> None:
    from archgen.blocks.stage import Branch, LayerScaleSpec
    from archgen.catalogue import KINDS
    from archgen.schema import PrefixTokens

    text = emit_docs()["specs/README.md"]
    for kind in (*KINDS, Branch, LayerScaleSpec, PrefixTokens):
        for name in kind.model_fields:
            assert f"| `{name}` |" in text, f"{kind.__name__}.{name}"


def test_readme_fidelity_table_is_current() -> None:
    from archgen.fidelity import markdown_table
    from conftest import ir_of

    table = markdown_table([ir_of(p) for p in SPECS])
    assert table in (ROOT / "README.md").read_text(encoding="utf-8"), (
        "README fidelity table is stale: paste `archgen list --fidelity`"
    )

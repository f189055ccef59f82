"""Class names in generated files: one class per distinct definition, named for what it is."""

from __future__ import annotations

import ast
import keyword
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from archgen import reserved, specs
from archgen.compiler import resolve
from archgen.errors import SpecError
from archgen.naming import class_names
from archgen.schema import Spec
from conftest import ALL, ROOT, assert_counts_exact, compile_data, ids, ir_of, source_of


def _classes(text: str) -> list[str]:
    return re.findall(r"^class (\w+)\(", text, flags=re.M)


def test_different_compositions_get_classes_named_for_what_differs(tmp_path: Path) -> None:
    stage = {"depth": 1, "heads": 2, "mlp_ratio": 2.0}
    data = {
        "name": "mixed", "family": "test", "title": "mixed", "paper": "test", "class_name": "Mixed",
        "img_size": 32, "in_chans": 3, "num_classes": 4, "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 8, "dim": 16},
        "prefix_tokens": {"cls": True}, "pos_embed": {"kind": "learned"},
        "stages": [
            {"key": "a", **stage, "block": [{"op": {"kind": "mhsa", "qkv_bias": True}}, {"op": "mlp"}]},
            {"key": "b", **stage, "block": [{"op": {"kind": "mhsa", "qkv_bias": False}}, {"op": "mlp"}],
             "layerscale": {"init": 0.1}},
            {"key": "c", **stage, "block": [{"op": "talking_heads"}, {"op": "mlp"}]},
        ],
        "norm": {"kind": "layernorm"}, "head": {"kind": "token"},
    }  # fmt: skip
    ir, text, module = compile_data(data, tmp_path)
    names = _classes(text)
    for name in ("AttentionQkvBias", "AttentionNoQkvBias", "Block", "LayerScaleBlock", "TalkingHeadsBlock"):
        assert names.count(name) == 1, f"{name} in {names}"
    assert_counts_exact("mixed", ir, module.mixed, 32)
    with torch.no_grad():
        assert module.mixed()(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_ops_whose_norms_differ_in_one_parameter_get_one_distinct_class_each(tmp_path: Path) -> None:
    """An unset norm bias is layernorm's default (one module, one class); `bias: false` and an rmsnorm differ.
    (A property-test draw once named two of these alike: an unset option and `False` gave the same word.)"""
    norms = ["layernorm", {"kind": "layernorm", "bias": True}, {"kind": "layernorm", "bias": False}, "rmsnorm"]
    stages = [
        {"key": f"s{i}", "depth": 1, "heads": 2, "mlp_ratio": 2.0,
         "block": [{"op": {"kind": "mhsa", "norm": norm}}, {"op": "mlp"}]}
        for i, norm in enumerate(norms)
    ]  # fmt: skip
    data = {
        "name": "norms", "family": "test", "title": "norms", "paper": "test", "class_name": "Norms",
        "img_size": 32, "in_chans": 3, "num_classes": 4, "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 8, "dim": 16},
        "prefix_tokens": {"cls": True}, "pos_embed": {"kind": "learned"},
        "stages": stages, "norm": {"kind": "layernorm"}, "head": {"kind": "token"},
    }  # fmt: skip
    ir, text, module = compile_data(data, tmp_path)
    attention = [n for n in _classes(text) if n.startswith("Attention")]
    assert len(attention) == len(set(attention)) == 3, attention
    blocks = [re.findall(rf"self\.s{i} = nn\.Sequential\(\*\[(\w+)\(", text) for i in range(4)]
    assert blocks[0] == blocks[1] and len({b[0] for b in blocks}) == 3, blocks
    assert_counts_exact("norms", ir, module.norms, 32)


def test_a_model_of_one_composition_has_one_plain_block_class() -> None:
    text = source_of(ROOT / "specs" / "deit_s.yaml")
    assert [n for n in _classes(text) if n.endswith("Block")] == ["Block"]
    assert "if " not in text.split("class Block(")[1].split("\n\n\n")[0]  # no option flags in the block


def test_deepvit_s_has_plain_and_reattention_blocks_in_one_container() -> None:
    text = source_of(ROOT / "specs" / "deepvit_s.yaml")
    assert [n for n in _classes(text) if n.endswith("Block")] == ["Block", "ReAttentionBlock"]
    assert "*[Block(396, 12, 1188, dpr[i], attn_drop_rate, proj_drop_rate) for i in range(11)]," in text
    assert "*[ReAttentionBlock(396, 12, 1188, dpr[11 + i], attn_drop_rate, proj_drop_rate) for i in range(5)]," in text


# --- identifiers a spec may not choose (archgen/reserved.py) ---------------------------------------------


def _module_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _model_attributes(tree: ast.Module, class_name: str) -> set[str]:
    """Methods of the model class and every ``self.<name>`` its methods touch."""
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    names = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            names.add(node.attr)
    return names


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_reserved_names_cover_what_every_generated_file_binds(path: Path) -> None:
    """What a generated file binds at module level is the spec's factory and class, the op and block classes
    naming gives this model, or a name in reserved.MODULE_NAMES; the model's own attributes (stages aside)
    are in reserved.MODEL_ATTRS or private. A template that adds a name fails here until it is reserved."""
    ir = ir_of(path)
    spec = ir.spec
    tree = ast.parse(source_of(path))
    own = {spec.name, spec.class_name, *class_names(ir.walk(spec.img_size), ir.model, spec.head)}
    unreserved = _module_level_names(tree) - own - reserved.MODULE_NAMES
    assert not unreserved, f"{path.stem}: add {sorted(unreserved)} to archgen.reserved.MODULE_NAMES"
    stages = {s.key.partition(".")[0] for s in spec.stages}
    stages |= {s.insert.key.partition(".")[0] for s in spec.stages if getattr(s, "insert", None) is not None}
    attrs = _model_attributes(tree, spec.class_name) - stages - reserved.NN_MODULE - reserved.MODEL_ATTRS
    unreserved = {a for a in attrs if not a.startswith("_")}
    assert not unreserved, f"{path.stem}: add {sorted(unreserved)} to archgen.reserved.MODEL_ATTRS"


def test_templates_define_no_module_level_name_that_is_not_reserved() -> None:
    """Catches a helper a template adds before any committed file uses it."""
    found = set()
    for template in sorted((ROOT / "archgen").rglob("*.j2")):
        text = template.read_text(encoding="utf-8")
        if template.name != "model.py.j2":  # a part's module-level code is its `classes` macro
            text = "".join(re.findall(r"{% macro classes\(.*?%}(.*?){% endmacro %}", text, flags=re.S))
        found |= set(re.findall(r"^def ([A-Za-z_]\w*)\(\s*(?!self\b)", text, flags=re.M))
        found |= set(re.findall(r"^class ([A-Za-z_]\w*)\(", text, flags=re.M))
        found |= set(re.findall(r"^([A-Za-z_]\w*) = ", text, flags=re.M))
    assert found, "the scan found no helper at all: has the template syntax changed?"
    assert found <= reserved.MODULE_NAMES, f"add {sorted(found - reserved.MODULE_NAMES)} to MODULE_NAMES"


def test_reserved_nn_module_names_are_torchs() -> None:
    """The frozen list (count never imports torch) holds every public attribute of an nn.Module today."""
    public = {n for n in dir(torch.nn.Module()) if not n.startswith("_")}
    assert public <= reserved.NN_MODULE, f"add {sorted(public - reserved.NN_MODULE)} to NN_MODULE"
    # a fresh interpreter's builtins: an extension imported by another test may have added its own (pybind11's)
    fresh = subprocess.run([sys.executable, "-c", "import builtins; print(*dir(builtins))"], capture_output=True,
                           text=True, check=True, timeout=60).stdout.split()  # fmt: skip
    assert set(fresh) == reserved.BUILTINS and set(keyword.kwlist) == reserved.KEYWORDS


def _spec(**changes: object) -> dict:
    data = yaml.safe_load((ROOT / "tests" / "bad_specs" / "ok_parent.yaml").read_text(encoding="utf-8"))
    data.update(changes)
    return data


def _with_stage_key(key: str) -> dict:
    data = _spec()
    data["stages"][0]["key"] = key
    return data


def _with_op_key(key: str) -> dict:
    data = _spec()
    data["stages"][0]["block"][1]["op"] = {"kind": "mlp", "key": key}
    return data


SLOTS = {
    "name": (lambda n: _spec(name=n), r"^[a-z_][a-z0-9_]*$"),
    "class_name": (lambda n: _spec(class_name=n), r"^[A-Z][A-Za-z0-9]*$"),
    "stage key": (_with_stage_key, r"^[a-z_][a-z0-9_]*$"),
    "op key": (_with_op_key, r"^[a-z_][a-z0-9_]*$"),
}
COLLIDING = {
    "name": reserved.KEYWORDS | reserved.SOFT_KEYWORDS | reserved.BUILTINS | reserved.MODULE_NAMES | {"__x__"},
    "class_name": reserved.KEYWORDS | reserved.BUILTINS | reserved.MODULE_NAMES,
    "stage key": reserved.KEYWORDS | reserved.NN_MODULE | reserved.MODEL_ATTRS | {"_modules", "_x"},
    "op key": reserved.KEYWORDS | reserved.NN_MODULE | {"_parameters", "_x"},
}


@pytest.mark.parametrize("slot", sorted(SLOTS))
def test_every_colliding_identifier_is_refused_in_the_schema(slot: str) -> None:
    """Each name that would collide, where the slot's pattern lets it through at all, fails validation
    with the reason; count and build both validate first."""
    make, pattern = SLOTS[slot]
    names = sorted(n for n in COLLIDING[slot] if re.match(pattern, n))
    assert len(names) > 20
    for name in names:
        with pytest.raises(ValidationError) as caught:
            Spec.model_validate(make(name))
        message = str(caught.value)
        assert f"'{name}'" in message and ("Python" in message or "attribute" in message or "defines" in message), (
            f"{slot} {name}: {message}"
        )
    Spec.model_validate(make("Fresh" if slot == "class_name" else "fresh"))  # and the slot takes an ordinary name


@pytest.mark.parametrize(
    ("attribute", "why"),
    [("drop_path", "drop_path"), ("norm2", "norm2"), ("ls1", "ls1"), ("gamma_2", "gamma_2"), ("attn", "attn")],
)
def test_an_op_key_may_not_take_a_sibling_attribute_of_its_block(attribute: str, why: str, tmp_path: Path) -> None:
    """An op named like another attribute of its block would replace it (an op `drop_path` replaced the
    attention: 3.9M parameters built, 5.7M counted)."""
    data = _with_op_key(attribute)
    data["name"] = "sibling"
    data["stages"][0]["layerscale"] = {"init": 1.0e-5, "keys": "gamma" if attribute.startswith("gamma") else "ls"}
    (tmp_path / "sibling.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SpecError, match=rf"stages\[0\]\.block\[1\]\.op\.key: '{why}' is already an attribute"):
        resolve(specs.load(tmp_path / "sibling.yaml"))


def test_class_name_may_not_be_a_class_the_model_defines(tmp_path: Path) -> None:
    for taken, what in (("Block", "block"), ("Attention", "op"), ("Mlp", "op")):
        data = _spec(name="clash", class_name=taken)
        (tmp_path / "clash.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        with pytest.raises(SpecError, match=rf"class_name: '{taken}' is also the name of the model's {what} class"):
            resolve(specs.load(tmp_path / "clash.yaml"))

"""Property tests over valid specs (hypothesis): compile, instantiate, count exactly, re-emit identically;
and free text never changes the generated program."""

from __future__ import annotations

import ast

import torch
from catalogue_cases import bases, norm_values, variants
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from archgen.catalogue import of_slot
from archgen.emit import comment_text, emit
from archgen.errors import SpecError
from conftest import assert_counts_exact, compile_data, saved_activation_bytes

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _op_choices() -> tuple[list[dict], list[dict]]:
    """Every op of the catalogue with each of its options, as the catalogue tests enumerate them: those that
    write every token (any block) and those that write the class token alone (a class-token stage)."""
    anywhere, first = [], []
    for kind in of_slot("op"):
        base = bases(kind)[0]
        for _, mapping in [("default", base), *variants(kind, base)]:
            if "key" in mapping:
                continue  # an attribute name changes no shape; two ops of one name collide in a block
            try:
                op = kind.model_validate(mapping)
            except ValueError:
                continue  # refused by the op itself (the catalogue tests check the message)
            (first if op.writes_first else anywhere).append(mapping)
    return anywhere, first


OPS_ANYWHERE, OPS_FIRST = _op_choices()
NORMS = ["none", *norm_values()]
GRID_OPS = {k.tag() for k in of_slot("op") if k.model_validate(bases(k)[0]).reads == "grid"}
PARALLEL = OPS_ANYWHERE  # any op in a parallel form, grid ops too
STEMS = {
    "patch_embed": lambda d, g: ({"kind": "patch_embed", "patch_size": 4, "dim": d}, 4 * g),
    "volo_conv_stem": lambda d, g: ({"kind": "volo_conv_stem", "hidden": 8, "patch_size": 4, "dim": d}, 4 * g),
    "i2t": lambda d, g: ({"kind": "i2t", "channels": 8, "patch_size": 1, "dim": d}, 4 * g),
    "conv_patch_embed": lambda d, g: ({"kind": "conv_patch_embed", "channels": 8, "patch_size": 2, "dim": d}, 4 * g),
}


def _op(draw: st.DrawFn, choices: list[dict]) -> dict:
    return dict(draw(st.sampled_from(choices)))


def _layerscale(draw: st.DrawFn) -> dict:
    return {"init": 1.0e-3, "keys": draw(st.sampled_from(["ls", "gamma"]))}


def _branch(draw: st.DrawFn, op: dict, parallel: bool = False) -> dict:
    """A residual branch around ``op``: any pre-norm of the catalogue, sometimes an output or post norm,
    LayerScale, DeepViT's scale; where ``parallel``, sometimes two ops from one norm or two paths."""
    branch: dict = {"norm": draw(st.sampled_from(["layernorm", *NORMS])), "op": op}
    form = draw(st.sampled_from(["op", "op", "op", "ops", "paths"])) if parallel else "op"
    if form == "ops":
        branch = {"norm": branch["norm"], "ops": [op, _op(draw, PARALLEL)]}
    elif form == "paths":
        paths = [{"norm": draw(st.sampled_from(NORMS)), "op": o} for o in (op, _op(draw, PARALLEL))]
        for path in paths:
            if draw(st.booleans()):
                path["layerscale"] = {"init": 1.0e-3}
        return {"key": "paths", "paths": paths}
    if draw(st.booleans()):
        branch["layerscale"] = _layerscale(draw)
    if draw(st.integers(0, 4)) == 0:
        branch["scale"] = 0.5
    for place in ("out_norm", "post_norm"):
        if draw(st.integers(0, 4)) == 0:
            branch[place] = draw(st.sampled_from(NORMS[1:]))
    return branch


def _stage(draw: st.DrawFn, key: str, heads: int, **options: object) -> dict:
    n = draw(st.integers(1, 3))
    block = [_branch(draw, _op(draw, OPS_ANYWHERE), parallel=i == 0) for i in range(n)]
    return {"key": key, "depth": draw(st.integers(1, 2)), "heads": heads, "mlp_ratio": 2.0, "block": block, **options}


@st.composite
def compositions(draw: st.DrawFn) -> dict:
    """A random model from every stem, prefix token, position table, op, stage option and head, built so
    that the tokens fit: prefix tokens join after a downsample, never before it."""
    heads, head_dim = draw(st.integers(1, 2)), draw(st.sampled_from([4, 8]))
    dim = heads * head_dim
    stem, img = STEMS[draw(st.sampled_from(sorted(STEMS)))](dim, draw(st.sampled_from([2, 4])))
    cls, dist, reg = draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2))
    tokens = [g for g, on in (("cls", cls), ("dist", dist), ("reg", reg)) if on]
    downsample = img // 4 % 2 == 0 and draw(st.booleans())
    class_stage = cls and draw(st.booleans())
    late = ["cls"] if class_stage else []
    if downsample:
        late = tokens  # no prefix token may enter the grid the downsample needs
    covers = ["all", "patches"] + (["cls"] if cls and "cls" not in late else [])
    table = draw(
        st.sampled_from(
            [
                None,
                {"kind": "learned", "covers": draw(st.sampled_from(covers))},
                {"kind": "learned_2d"},
                {"kind": "sincos", "covers": draw(st.sampled_from(covers))},
                {"kind": "sincos_2d", "convention": "mae", "covers": draw(st.sampled_from(covers))},
                {"kind": "sincos_2d", "convention": "big_vision", "covers": "patches"},
            ]
        )
    )
    if table and table["kind"] == "sincos_2d" and (dim % 4 or dim < 8):
        table = None
    stages = [_stage(draw, "stage1", heads, collect_cls=cls and not late and draw(st.booleans()))]
    wide = dim
    if downsample:
        wide = 2 * dim
        stages.append({"kind": "conv_downsample", "key": "merge", "dim": wide, "stride": 2})
        joins = [t for t in tokens if t not in (["cls"] if class_stage else [])]
        stages.append(_stage(draw, "stage2", 2 * heads, joins=joins) if joins else _stage(draw, "stage2", 2 * heads))
    if class_stage:
        first = _op(draw, OPS_FIRST + [o for o in OPS_ANYWHERE if o["kind"] in ("mhsa", "talking_heads")])
        block = [_branch(draw, first), _branch(draw, {"kind": "mlp"})]
        stages.append({"key": "cls_blocks", "depth": 1, "heads": heads * wide // dim, "mlp_ratio": 2.0,
                       "joins": ["cls"], "updates": "cls", "stochastic_depth": False, "block": block})  # fmt: skip
    lca = stages[-1].get("collect_cls") and len(stages) == 1 and not class_stage
    if lca:
        stages.append({"kind": "lca", "key": "lca", "heads": heads, "mlp_ratio": 2.0, "feedforward": "mlp"})
    heads_ok = ["avg"] if not lca else []
    if cls:
        heads_ok += ["token"] + (["token_labeling"] if not lca else [])
        heads_ok += ["distilled"] if dist and not lca and not downsample and not class_stage else []
    head = draw(st.sampled_from(heads_ok))
    return {
        "name": "prop",
        "family": "prop",
        "title": "property spec",
        "paper": "generated by hypothesis",
        "class_name": "PropModel",
        "img_size": img,
        "in_chans": 3,
        "num_classes": draw(st.integers(0, 7)),
        "norm_eps": 1.0e-6,
        "stem": stem,
        "prefix_tokens": {"cls": cls, "dist": dist, "reg": reg},
        **({"pos_embed": table} if table else {}),
        "stages": stages,
        **({"norm_pre": draw(st.sampled_from(NORMS[1:]))} if draw(st.integers(0, 3)) == 0 else {}),
        "norm": draw(st.sampled_from(NORMS)),
        "head": {"kind": head, **({"fc_norm": draw(st.booleans())} if head == "avg" else {})},
    }


@SETTINGS
@given(data=compositions())
def test_any_composition_compiles_runs_and_counts_exactly(data: dict, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("prop")
    try:
        ir, text, module = compile_data(data, folder)
    except SpecError as e:  # an option that does not fit these shapes (an outlook window on a small grid)
        assert "\n" not in str(e) and ".yaml:" in str(e), str(e)
        reject()
    assert emit(ir) == {"generated/prop.py": text}
    size = data["img_size"]
    assert_counts_exact(f"composition {data}", ir, module.prop, size)
    model = module.prop().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, data["num_classes"] or model.num_features)
    assert torch.isfinite(out).all()
    # float32, float32 under bf16 autocast (--amp bf16), then the module cast to bfloat16
    for dtype, amp, ckpt in (
        (torch.float32, None, False),
        (torch.float32, "bf16", False),
        (torch.bfloat16, None, True),
    ):
        autocast = torch.bfloat16 if amp else None
        measured = saved_activation_bytes(model.to(dtype), dtype, ckpt, 2, size, autocast=autocast)
        analytic = ir.memory(size, 2, str(dtype).removeprefix("torch."), ckpt, amp=amp).activation_bytes
        where = f"composition {data} {dtype} --amp {amp} checkpointing={ckpt}"
        assert analytic == measured, f"{where}: {analytic:,} != {measured:,}"


def _program(text: str) -> str:
    """The AST without docstrings: what the code does, ignoring its prose."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                body.pop(0)
    return ast.dump(tree)


FREE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=120).filter(
    lambda s: s.strip()
)


@SETTINGS
@given(title=FREE_TEXT, paper=FREE_TEXT, source=FREE_TEXT)
def test_free_text_never_changes_the_program(title: str, paper: str, source: str, tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("text")
    data = {
        "name": "prop",
        "family": "prop",
        "title": "plain",
        "paper": "plain",
        "class_name": "PropModel",
        "img_size": 8,
        "in_chans": 3,
        "num_classes": 4,
        "norm_eps": 1.0e-6,
        "stem": {"kind": "patch_embed", "patch_size": 4, "dim": 8},
        "prefix_tokens": {"cls": True},
        "pos_embed": {"kind": "learned", "covers": "all"},
        "stages": [
            {"key": "blocks", "depth": 1, "heads": 2, "mlp_ratio": 2.0, "block": [{"op": "mhsa"}, {"op": "mlp"}]}
        ],
        "norm": {"kind": "layernorm"},
        "head": {"kind": "token"},
        "published": [{"img_size": 8, "params": "1M", "source": "plain", "deviation": "plain"}],
    }
    _, plain, _ = compile_data(data, folder)
    hostile = {**data, "title": title, "paper": paper}
    hostile["published"] = [{**data["published"][0], "source": source, "deviation": source}]
    _, text, _ = compile_data(hostile, folder)
    assert _program(text) == _program(plain)
    doc = " ".join((ast.get_docstring(ast.parse(text), clean=False) or "").split())
    assert " ".join(comment_text(title).split()) in doc

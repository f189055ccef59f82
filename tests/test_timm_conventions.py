"""The conventions timm's own model test-suite checks (pytorch-image-models tests/test_models.py), written
here as our own checks on models built the way those tests build them: ``timm.create_model(name, ...)`` after
``import archgen.timm``.

Every spec: the registered pretrained_cfg tells the truth (input size, fixed_input_size, pool_size,
first_conv and classifier keys, head_hidden_size) and features_only takes timm's default taps, all on the
meta device. The smallest spec of each family (DeepViT's with its conv stem) also runs: forward at the
input size the cfg implies, backward at the reduced size timm's rule picks, the default-cfg checks of
timm's non-spatial models, torch.fx forward and backward through timm's feature-extraction helpers,
forward_intermediates and features_only; for the families timm has, features_only equals timm's own.
"""

from __future__ import annotations

import inspect
import itertools
import linecache
import math
import pickle
import traceback
from pathlib import Path

import pytest
import torch

from conftest import (
    HYBRIDS,
    ROOT,
    SPECS,
    assert_close_to_scale,
    factory,
    fixed_grid,
    ir_of,
    module_of,
    one_per_family,
    randomised,
    timm_size_kwargs,
)

timm = pytest.importorskip("timm")

pytest.importorskip("torchvision")  # timm's FX helpers are torchvision's feature extraction
from timm.models import get_pretrained_cfg  # noqa: E402
from timm.models._features_fx import create_feature_extractor, get_graph_node_names  # noqa: E402

import archgen.timm  # noqa: E402, F401  (registers the specs)
from archgen.compiler import IR  # noqa: E402

NAMES = [p.stem for p in SPECS]
# the smallest spec of each family; DeepViT-S for its conv stem (the others of its family share ViT's)
RUN = ["deit_ti", "vit_s16", "deit3_s", "cait_xxs24", "volo_d1", "ceit_t", "deepvit_s"]
TIMM_FAMILIES = [n for n in RUN if ir_of(ROOT / "specs" / f"{n}.yaml").spec.reference.package == "timm"]
FAST = ("deit_ti", "ceit_t")  # the rest take 3 to 10 s a test here


def _marked(names: list[str]) -> list[object]:
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in names]


# timm's sizes: forward at most 384, backward (also through torch.fx) aimed at 128
TARGET_FWD, TARGET_BWD = 384, 128


def _ir(name: str) -> IR:
    return ir_of(ROOT / "specs" / f"{name}.yaml")


def _input_size(cfg: dict, target: int) -> tuple[int, ...]:
    """timm's rule: a fixed-size model takes its cfg's size; any other the cfg's size capped at target."""
    size = cfg["input_size"]
    return size if cfg.get("fixed_input_size") else tuple(min(s, target) for s in size)


@pytest.mark.parametrize("name", NAMES)
def test_registered_cfg_tells_the_truth(name: str) -> None:
    ir = _ir(name)
    spec, final = ir.spec, ir.final(ir.spec.img_size)
    cfg = get_pretrained_cfg(name).to_dict()
    assert cfg["input_size"] == (spec.in_chans, *spec.img_size), f"{name}: input_size"
    # a model whose parts all work at any size (no position table: PVT-v2) is not fixed to its size, and one
    # whose forward_features returns a feature map reports its size there as timm's CNN-like models do
    size_bound = any(not w.kind.size_free for w in ir.walk(spec.img_size))
    pool = None if ir.head.needs() == "seq" else (final.h, final.w)
    assert cfg["fixed_input_size"] is size_bound and cfg["pool_size"] == pool, name
    with torch.device("meta"):
        model = timm.create_model(name)
        other = timm.create_model(name, img_size=spec.img_size[0] + 32)
        if fixed_grid(ROOT / "specs" / f"{name}.yaml"):  # a part built for one grid: the flag is refused, not reported
            with pytest.raises(ValueError, match="dynamic_img_size"):
                timm.create_model(name, dynamic_img_size=True)
        else:
            dynamic = timm.create_model(name, dynamic_img_size=True)
            assert dynamic.pretrained_cfg["fixed_input_size"] is False, f"{name}: dynamic_img_size=True takes any size"
    assert model.pretrained_cfg == cfg, f"{name}: the instance's cfg is not the registered one"
    size = spec.img_size[0] + 32
    assert other.pretrained_cfg["input_size"] == (spec.in_chans, size, size), f"{name}: cfg of img_size={size}"
    assert model.num_features == model.head_hidden_size == final.dim, f"{name}: widths, token width {final.dim}"
    keys = model.state_dict().keys()
    classifiers = (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]
    for module in (cfg["first_conv"], *(classifiers if cfg["num_classes"] else ())):  # 0 classes: no classifier
        assert f"{module}.weight" in keys, f"{name}: {module}.weight not in the state_dict"


@pytest.mark.parametrize("name", NAMES)
def test_features_only_takes_the_last_three_taps(name: str) -> None:
    """timm's default for its ViTs (out_indices=3), and ours for CeiT and DeepViT; a pyramid's stages (each
    tap at a coarser stride) all, as timm's PVT-v2, Swin, PiT and Twins."""
    with torch.device("meta"):
        full = timm.create_model(name)
        model = timm.create_model(name, features_only=True)
    taps = [f["module"] for f in full.feature_info]
    strides = [f["reduction"] for f in full.feature_info]
    pyramid = all(a < b for a, b in itertools.pairwise(strides))
    assert len(taps) >= 3 and model.feature_info.module_name() == (taps if pyramid else taps[-3:]), name


@pytest.mark.parametrize("name", _marked(RUN))
def test_forward_and_backward_at_timms_sizes(name: str) -> None:
    cfg = get_pretrained_cfg(name).to_dict()
    model = timm.create_model(name).eval()
    x = torch.randn(1, *_input_size(cfg, TARGET_FWD))
    out = model(x)
    model.set_grad_checkpointing()  # takes effect where gradients are recorded
    torch.testing.assert_close(model(x), out, rtol=0, atol=0, msg=f"{name}: grad checkpointing")
    assert out.shape == (1, cfg["num_classes"]) and torch.isfinite(out).all(), name

    model = timm.create_model(name, num_classes=42).train()
    out = model(torch.randn(2, *_input_size(cfg, TARGET_BWD)))
    out.mean().backward()
    assert out.shape == (2, 42), name
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"


@pytest.mark.parametrize("name", _marked(RUN))
def test_default_cfg_checks_of_timms_non_spatial_models(name: str) -> None:
    """Features (B, N, C) with C = num_features; pre-logits, the classifier reset to 0 classes and a model
    built without one give head_hidden_size features."""
    model = randomised(timm.create_model(name))
    x = torch.randn(1, *_input_size(model.pretrained_cfg, TARGET_FWD))
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.ndim == 3 and feats.shape[-1] == model.num_features, f"{name}: features {tuple(feats.shape)}"
        assert pre.shape == (1, model.head_hidden_size), f"{name}: pre-logits {tuple(pre.shape)}"
        model.reset_classifier(0)
        assert model.num_classes == 0
        pooled = model(x)
        assert pooled.shape == pre.shape, f"{name}: {tuple(pooled.shape)} after reset_classifier(0)"
        if not hasattr(model, "aux_head"):  # VOLO adds its token-labeling term to any head, as timm's does
            torch.testing.assert_close(pooled, pre, rtol=0, atol=0, msg=f"{name}: reset head is not pre-logits")
        headless = timm.create_model(name, num_classes=0).eval()
        assert headless(x).shape == (1, headless.num_features), name


def _fx(model: torch.nn.Module) -> torch.nn.Module:
    """The model traced by timm's torch.fx helpers, returning the node that produces its output."""
    train_nodes, eval_nodes = get_graph_node_names(model)
    nodes = train_nodes if model.training else eval_nodes
    return create_feature_extractor(model, {nodes[-1]: "out"})


@pytest.mark.parametrize("name", _marked(RUN))
def test_torch_fx_forward_equals_the_module(name: str) -> None:
    model = randomised(timm.create_model(name))
    x = torch.randn(1, *_input_size(model.pretrained_cfg, TARGET_BWD))
    with torch.no_grad():
        expected = model(x)
        got = _fx(model)(x)["out"]
    assert torch.equal(got, expected), f"{name}: max |diff| {(got - expected).abs().max():.3g}"


@pytest.mark.parametrize("name", _marked(RUN))
def test_torch_fx_backward_reaches_every_parameter(name: str) -> None:
    model = timm.create_model(name, num_classes=42).train()
    traced = _fx(model)
    out = traced(torch.randn(2, *_input_size(model.pretrained_cfg, TARGET_BWD)))["out"]
    out.mean().backward()
    assert out.shape == (2, 42), name
    missing = [n for n, p in traced.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"


@pytest.mark.parametrize("name", _marked(["deit_ti", "volo_d1", "ceit_t"]))
def test_torch_fx_traces_dynamic_img_size(name: str) -> None:
    """With dynamic_img_size=True the resampling helpers are single graph nodes: the traced model takes
    another size than the one it was traced at, as the module does."""
    model = randomised(timm.create_model(name, dynamic_img_size=True))
    traced = _fx(model)
    x = torch.randn(1, 3, 160, 160)  # LeFF and outlook attention need a square grid
    with torch.no_grad():
        assert torch.equal(traced(x)["out"], model(x)), name


def _check_taps(name: str, outputs: list[torch.Tensor], info: list[dict], size: tuple[int, ...]) -> None:
    assert len(outputs) == len(info), f"{name}: {len(outputs)} outputs for {len(info)} taps"
    for o, tap in zip(outputs, info, strict=True):
        side = math.ceil(size[-1] / tap["reduction"])
        assert o.shape[:2] == (1, tap["num_chs"]) and o.shape[2] <= side + 1 and o.shape[3] <= side + 1, (
            f"{name}: {tap['module']} gives {tuple(o.shape)}, expected {tap['num_chs']} channels at about {side}"
        )
        assert torch.isfinite(o).all(), name


@pytest.mark.parametrize("name", _marked(RUN))
def test_forward_intermediates_and_features_only(name: str) -> None:
    model = randomised(timm.create_model(name))
    size = _input_size(model.pretrained_cfg, 96)
    x = torch.randn(1, *size)
    assert len(model.feature_info) >= 3, name
    with torch.no_grad():
        final, taps = model.forward_intermediates(x, output_fmt="NCHW")
        _check_taps(name, taps, model.feature_info, size)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0, msg=f"{name}: final features")
    model.set_grad_checkpointing()  # takes effect where gradients are recorded
    torch.testing.assert_close(model.forward_intermediates(x)[0], final, rtol=0, atol=0, msg=f"{name}: checkpointed")
    with torch.no_grad():
        wrapped = timm.create_model(name, features_only=True).eval()
        wrapped.model.load_state_dict({k: v for k, v in model.state_dict().items() if k in wrapped.model.state_dict()})
        got = wrapped(x)
    _check_taps(name, got, wrapped.feature_info.get_dicts(), size)
    by_module = {t["module"]: o for t, o in zip(model.feature_info, taps, strict=True)}
    for module, o in zip(wrapped.feature_info.module_name(), got, strict=True):
        torch.testing.assert_close(o, by_module[module], rtol=0, atol=0, msg=f"{name}: features_only {module}")


TIMM_NAMES = [n for n in NAMES if (ref := _ir(n).spec.reference) is not None and ref.package == "timm"]


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_features_only_keeps_timms_state_dict(name: str) -> None:
    """Pruned to timm's default taps, ours holds what timm's holds (class attention, class token, fc_norm
    and the head dropped alike) under the keys of timm's wrapper (FeatureGetterNet's `model.`, Swin's and
    PVT-v2's FeatureListNet `layers_0.`, PiT's FeatureHookNet `body.`), so features_only checkpoints load
    either way."""
    spec = _ir(name).spec
    with torch.device("meta"):
        size = timm_size_kwargs(spec.reference.model, spec.img_size)
        ref = timm.create_model(spec.reference.model, features_only=True, **size)
        ours = timm.create_model(name, features_only=True)
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs, (
        f"{name}: only ours {sorted(mine.keys() - theirs)[:4]}, only timm's {sorted(theirs.keys() - mine)[:4]}"
    )


@pytest.mark.parametrize("name", [*_marked(TIMM_FAMILIES), "swin_t", "pvtv2_b0", "pit_ti"])
def test_features_only_equals_timms(name: str) -> None:
    """timm's model and ours, features_only with timm's defaults, on the same weights: same taps, same values."""
    ref = timm.create_model(_ir(name).spec.reference.model, features_only=True)
    randomised(ref)
    ours = timm.create_model(name, features_only=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)  # and back: ours saves under timm's keys
    for field in ("module_name", "channels", "reduction"):
        mine, theirs = getattr(ours.feature_info, field)(), getattr(ref.feature_info, field)()
        assert mine == theirs, f"{name}: feature_info {field} {mine}, timm {theirs}"
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = ref(x), ours(x)
    assert len(a) == len(b), name
    for module, u, v in zip(ref.feature_info.module_name(), a, b, strict=True):
        assert u.shape == v.shape, f"{name}: {module} {tuple(v.shape)}, timm {tuple(u.shape)}"
        assert_close_to_scale(f"{name}: {module}", v, u)


def test_tracebacks_show_the_generated_source() -> None:
    """A module built through archgen.timm reports errors at lines of its generated source, which are the
    lines of the committed file."""
    model = timm.create_model("deit_ti").eval()
    with pytest.raises(AssertionError, match="expects 224x224 inputs, got 256x256") as err, torch.no_grad():
        model(torch.randn(1, 3, 256, 256))
    frames = [f for f in traceback.extract_tb(err.value.__traceback__) if "generated/deit_ti.py" in f.filename]
    assert [f.name for f in frames] == ["forward", "forward_features", "patch_grid"]
    committed = (ROOT / "generated" / "deit_ti.py").read_text().splitlines()
    for f in frames:
        assert f.filename.startswith("<archgen: generated/deit_ti.py from ") and f.filename.endswith("deit_ti.yaml>")
        assert f.line == committed[f.lineno - 1].strip(), f"{f.name}: line {f.lineno}"
        assert linecache.getline(f.filename, f.lineno).strip() == f.line


def test_models_built_through_timm_pickle_and_show_their_source() -> None:
    model = randomised(timm.create_model("ceit_t", num_classes=7))
    copy = pickle.loads(pickle.dumps(model))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(copy(x), model(x))
    assert inspect.getsource(type(model).forward_features).lstrip().startswith("def forward_features(self, x")


def test_standalone_file_keeps_the_default_cfg_of_the_weights() -> None:
    """The file's pretrained_cfg describes the reference weights (cait_m36: trained at 384); a model built
    at another size reports its own input size."""
    path = ROOT / "specs" / "cait_m36.yaml"
    with torch.device("meta"):
        model = factory(path)()
    module_cfg = module_of(path).pretrained_cfg
    assert module_cfg["input_size"] == (3, 384, 384)
    assert model.pretrained_cfg == dict(module_cfg, input_size=(3, 224, 224))
    model.set_input_size(384)
    assert model.pretrained_cfg == module_cfg


@pytest.mark.slow
@pytest.mark.parametrize("path", HYBRIDS, ids=[p.stem for p in HYBRIDS])
def test_every_part_traces_with_torch_fx(path: Path) -> None:
    """The hybrids put every part where the library's specs do not (LeFF beside prefix tokens, outlook
    attention on a sequence, sin-cos tables, LCA after plain blocks): each traces, fixed and dynamic, and the
    graph computes what the module does."""
    for dynamic in (False, True) if fixed_grid(path) is None else (False,):  # (BEiT's bias refuses dynamic sizes)
        model = randomised(factory(path)(dynamic_img_size=dynamic))
        x = torch.randn(1, 3, *ir_of(path).spec.img_size)
        with torch.no_grad():
            got, expected = _fx(model)(x)["out"], model(x)
        assert torch.equal(got, expected), (
            f"{path.stem} (dynamic_img_size={dynamic}): max |diff| {(got - expected).abs().max():.3g}"
        )


@pytest.mark.parametrize("name", ["deit_ti_sincos", "vit_s16_big_vision_gap"])
def test_dynamic_img_size_computes_the_fixed_table_of_that_size(name: str) -> None:
    """A sin-cos table is a function of the grid: at another input size a dynamic model computes the table a
    model built for that size holds."""
    path = ROOT / "tests" / "hybrids" / f"{name}.yaml"
    dynamic = randomised(factory(path)(dynamic_img_size=True))
    built = factory(path)(img_size=160).eval()
    built.load_state_dict(dynamic.state_dict(), strict=True)
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert torch.equal(dynamic(x), built(x)), name


@pytest.mark.parametrize("name", ["swin_t", "pvtv2_b0", "pit_ti", "twins_svt_s"])
def test_hierarchical_families_trace_with_torch_fx(name: str) -> None:
    """timm's FX convention for the pyramids: window padding, odd-side merging and Twins' window padding branch
    on shapes inside torch.fx-wrapped helpers, so the traced graph computes what the module does."""
    model = randomised(factory(ROOT / "specs" / f"{name}.yaml")())
    x = torch.randn(1, 3, *ir_of(ROOT / "specs" / f"{name}.yaml").spec.img_size)
    with torch.no_grad():
        got, expected = _fx(model)(x)["out"], model(x)
    assert torch.equal(got, expected), f"{name}: traced max |diff| {(got - expected).abs().max():.3g}"


def _drop_rates(model: torch.nn.Module) -> dict[str, float]:
    """Each block's stochastic-depth rate by the block's attribute path (timm holds a DropPath per branch, we one
    per block; a rate of 0 is timm's Identity and our missing module alike)."""
    rates: dict[str, set[float]] = {}
    for name, module in model.named_modules():
        rate = getattr(module, "drop_prob", getattr(module, "p", 0.0)) if type(module).__name__ == "DropPath" else 0
        if rate:
            rates.setdefault(name.rpartition(".")[0], set()).add(rate)
    assert all(len(r) == 1 for r in rates.values()), f"one rate per block: {rates}"
    return {block: r.pop() for block, r in rates.items()}


SCHEDULED = [
    p.stem
    for p in one_per_family("test_stochastic_depth_rates_equal_timms")
    if (ref := _ir(p.stem).spec.reference) is not None and ref.package == "timm"
]


@pytest.mark.parametrize("name", SCHEDULED)
def test_stochastic_depth_rates_equal_timms(name: str) -> None:
    """drop_path_rate=0.1 gives every block timm's rate: linear over the blocks (ViT, PiT, Swin, ...), one rate
    for all (CaiT), none for VOLO's outlookers, which still count in the schedule. Equal up to float32
    rounding: timm takes some schedules from torch.linspace, we compute them in Python floats."""
    spec = _ir(name).spec
    with torch.device("meta"):
        ref = timm.create_model(
            spec.reference.model, drop_path_rate=0.1, **timm_size_kwargs(spec.reference.model, spec.img_size)
        )
        ours = timm.create_model(name, drop_path_rate=0.1)
    theirs, mine = _drop_rates(ref), _drop_rates(ours)
    assert mine.keys() == theirs.keys(), f"{name}: blocks with a rate differ: {sorted(mine.keys() ^ theirs.keys())[:4]}"
    wrong = {b: (mine[b], theirs[b]) for b in mine if not math.isclose(mine[b], theirs[b], rel_tol=1e-6)}
    assert not wrong, f"{name}: (ours, timm's) rates {dict(list(wrong.items())[:3])}"

"""Shared helpers: every spec in specs/ (and the hybrids under tests/hybrids/) compiled once."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import types
from functools import cache
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from archgen import specs
from archgen.compiler import IR, resolve
from archgen.emit import emit
from archgen.emit import fixed_grid as emitted_fixed_grid
from archgen.errors import SpecError
from archgen.geometry import size_of, size_text
from archgen.loader import dump_yaml

# The suite draws the same hypothesis examples on every run, so a CI run passes or fails on the code alone;
# HYPOTHESIS_PROFILE=explore draws new ones (and replays failures from the local example database).
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

ROOT = Path(__file__).resolve().parent.parent

# A worker of `pytest -n` takes its share of the cores: torch's own threads would otherwise oversubscribe them.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

# A worker holds up to two models of 300M parameters (a reference and ours, in float32) and their activations.
WORKER_MEMORY = 4 << 30
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
HYBRIDS = sorted((ROOT / "tests" / "hybrids").glob("*.yaml"))
ALL = SPECS + HYBRIDS

# Above this many parameters a module is only ever instantiated on the meta device.
LARGE = 100_000_000


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


@cache
def ir_of(path: Path) -> IR:
    return resolve(specs.load(path))


@cache
def source_of(path: Path) -> str:
    (text,) = emit(ir_of(path)).values()
    return text


@cache
def module_of(path: Path) -> types.ModuleType:
    """The generated module: the committed file for specs/, freshly emitted code for hybrids."""
    name = f"archgen_test_generated_{path.stem}"
    committed = ROOT / "generated" / f"{path.stem}.py"
    if path.parent == ROOT / "specs":
        spec = importlib.util.spec_from_file_location(name, committed)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source_of(path), f"<{path.name}>", "exec"), module.__dict__)
    return module


def factory(path: Path):
    return getattr(module_of(path), path.stem)


def resolutions(path: Path) -> list[tuple[int, int]]:
    """Default, 384 (or the next size the strides divide, e.g. 392 for /14) and every published one."""
    ir = ir_of(path)
    high = 384
    while True:
        try:
            ir.walk(high)
            break
        except SpecError:
            high += 1
    return sorted({ir.spec.img_size, (high, high)} | {p.img_size for p in ir.spec.published})


def non_square(path: Path) -> tuple[int, int] | None:
    """A resolution (H, W) with W about 1.5 H that the spec takes (H its default height); None where the spec
    takes no W != H near it (a grid op that needs a square)."""
    ir = ir_of(path)
    h = ir.spec.img_size[0]
    for w in range(h * 3 // 2, h * 3 // 2 + 64):
        try:
            ir.walk((h, w))
        except SpecError:
            continue
        return (h, w)
    return None


@cache
def family_smallest() -> list[Path]:
    """The spec with the fewest parameters of each family (hybrids: each its own; size variants, which take
    the meta-device checks only, left out), for per-family checks."""
    best: dict[str, tuple[int, Path]] = {}
    for path in ALL:
        if size_variant(path.stem):
            continue
        ir = ir_of(path)
        family = path.stem if path in HYBRIDS else ir.spec.family
        best[family] = min(best.get(family, (ir.count(ir.spec.img_size).params, path)),
                           (ir.count(ir.spec.img_size).params, path))  # fmt: skip
    return sorted(path for _, path in best.values())


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    import torch

    torch.manual_seed(0)


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter distinct (LayerNorm weights no longer 1/0) and BatchNorm statistics non-trivial,
    so that swapped or misplaced tensors change the output."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    return model.eval()


def timm_pair(name: str, **kwargs: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    """timm's model of spec ``name`` (perturbed so that no two parameters are alike) and ours with its weights,
    both eval; ``kwargs`` go to both constructors."""
    import timm

    path = ROOT / "specs" / f"{name}.yaml"
    ref = timm.create_model(ir_of(path).spec.reference.model, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = factory(path)(**kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def assert_close_to_scale(name: str, ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    """Max absolute difference within ``tol`` of the output scale (max |ref|, at least 1)."""
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    assert diff <= tol * max(scale, 1.0), f"{name}: max |diff| {diff:.3g} vs output scale {scale:.3g}"


def bn_keys(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    """state_dict entries of a BatchNorm with ``c`` channels."""
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}  # fmt: skip


@cache
def timm_size_kwargs(model: str, img_size: int) -> dict[str, int]:
    """``img_size=`` for a timm model whose constructor takes it; {} for one that takes any input size without
    being told (timm's PVT-v2 has no position table and no such argument)."""
    import timm

    try:
        with torch.device("meta"):
            timm.create_model(model, pretrained=False, img_size=img_size)
    except TypeError:  # the constructor has no such argument (a subclass passing **kwargs on takes it)
        return {}
    return {"img_size": img_size}


def compile_data(data: dict, folder: Path) -> tuple[IR, str, types.ModuleType]:
    """A spec given as data, written to ``folder``, compiled and executed: (IR, source, module)."""
    path = folder / f"{data['name']}.yaml"
    path.write_text(dump_yaml(data), encoding="utf-8")
    ir = resolve(specs.load(path))
    (text,) = emit(ir).values()
    module = types.ModuleType(f"archgen_test_data_{data['name']}")
    exec(compile(text, f"<{path.name}>", "exec"), module.__dict__)
    return ir, text, module


def fixed_grid(path: Path) -> str | None:
    """Why the spec's model refuses dynamic_img_size (a part built for one grid), or None."""
    return emitted_fixed_grid(ir_of(path))


def shallow(path: Path, folder: Path, depth: int = 2) -> types.ModuleType:
    """The generated module of a child of ``path`` whose stages hold at most ``depth`` blocks each: every part and
    placement of the spec, for checks whose cost grows with the graph (export, tracing) and not with the weights."""
    ir = ir_of(path)
    walked = ir.walk(ir.spec.img_size)
    stages = {
        w.kind.key: {"depth": depth} for w in walked if hasattr(w.kind, "key") and getattr(w.kind, "depth", 0) > depth
    }
    _, _, module = compile_data({"extends": path.stem, "name": f"{path.stem}_shallow", "stages": stages}, folder)
    return module


def assert_counts_exact(label: str, ir: IR, build, img_size: int | tuple[int, int]) -> None:
    """Analytic params == sum(numel) and analytic MACs == FlopCounterMode / 2, on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    counted = ir.count(img_size)
    with torch.device("meta"):
        meta = build(img_size=img_size).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, ir.spec.in_chans, *size_of(img_size), device="meta"))
    actual = sum(p.numel() for p in meta.parameters())
    at = size_text(img_size)
    assert counted.params == actual, f"{label}@{at}: analytic params {counted.params:,} != module {actual:,}"
    measured = counter.get_total_flops() // 2
    assert counted.macs == measured, f"{label}@{at}: analytic MACs {counted.macs:,} != counted {measured:,}"


def saved_activation_bytes(
    model: torch.nn.Module,
    dtype: torch.dtype,
    checkpointing: bool,
    batch: int,
    img: int | tuple[int, int],
    autocast: torch.dtype | None = None,
) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``model(x)`` in training mode
    (parameters and buffers excluded): what ``archgen count --memory`` calls activation bytes. ``autocast``:
    the forward runs under ``torch.autocast("cpu", autocast)`` (``count --memory --amp``)."""
    model.train().set_grad_checkpointing(checkpointing)
    skip = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in skip:
            seen.setdefault(storage._cdata, storage.nbytes())
        # Keep the storage alive (so no later storage takes its address) without its grad_fn: a node that
        # saved its own output would otherwise hold itself, a cycle Python's collector cannot free.
        return t.detach()

    x = torch.randn(batch, 3, *size_of(img), dtype=dtype)
    amp = torch.autocast("cpu", dtype=autocast, enabled=autocast is not None)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp:
        model(x)
    return sum(seen.values())


# The fast subset (`pytest -m "not slow"`, for development): tests that run every spec keep one small spec per
# family there (the full suite, which CI runs, keeps them all); whole files and tests that take tens of seconds
# on their own (ONNX and torch.export, torch.compile, distributed training, the installed wheel, every generated
# file in a fresh interpreter, the bad-spec corpus through the CLI, CaiT's timm configs, fp16 and fake-tensor
# memory) are left to the full suite. Tests marked `slow` in place are too.
FAST_SPECS = frozenset(
    {
        "vit_s16",
        "deit_ti",
        "deit3_s",
        "cait_xxs24",
        "cait_xxs24_224",
        "volo_d1",
        "ceit_t",
        "deepvit_s",
        "vit_s16_rope_mixed",
        "pvtv2_b0",
    }
)
PER_SPEC_TESTS = frozenset(
    {
        "test_model_contract",
        "test_unreleased_variant_matches_timm_classes",
        "test_hybrid_compiles_runs_and_counts_exactly",
        "test_eval_outputs_equal_timm",
        "test_pos_embed_resampled_like_timm",
        "test_macs_equal_flop_counter",
        "test_activation_bytes_equal_what_autograd_saves",
        "test_activation_bytes_at_a_non_square_size",
    }
)
# Which specs every per-spec test runs on CPU: the six papers' families (and their timm relatives), the models
# issue 19 names, and the hybrids. The other sizes of the later families (children that change widths, depths,
# resolutions: a CLIP ViT-H, a DINOv2 giant) share those parts and are checked on the meta device instead
# (state_dict keys and shapes, params and MACs equal timm's: test_parity_timm.py), which keeps CI's time flat as
# the library grows.
SEED_FAMILIES = frozenset({"vit", "deit", "deit3", "cait", "ceit", "volo", "deepvit"})
PROOF_MODELS = frozenset(
    {
        "vit_base_patch16_clip_224",
        "vit_base_patch16_clip_quickgelu_224",
        "vit_large_patch14_clip_224",
        "vit_base_patch16_siglip_224",
        "vit_base_patch16_siglip_gap_224",
        "vit_so400m_patch14_siglip_224",
        "vit_small_patch14_dinov2",
        "vit_small_patch14_reg4_dinov2",
        "eva02_tiny_patch14_224",
        "eva02_small_patch14_224",
        "eva02_base_patch14_224",
        "beit_base_patch16_224",
        "beitv2_base_patch16_224",
        "vit_base_patch16_rope_reg1_gap_256",
        "vit_base_patch16_rope_mixed_224",
        "aimv2_large_patch14_224",
        "vit_base_patch16_xp_224",
        "vit_small_patch16_18x2_224",
        # issue 20: hierarchical families
        "pvt_v2_b0",
        "pvt_v2_b2_li",
        "twins_svt_small",
        "twins_pcpvt_small",
        "pit_ti_224",
        "pit_xs_distilled_224",
        "swin_tiny_patch4_window7_224",
        "swin_base_patch4_window12_384",
        # later: BEiT-3's vision path (timm remaps it onto its ViT)
        "beit3_base_patch16_224",
    }
)


def _later(stem: str) -> tuple[str, bool, int] | None:
    """(family, named, params) of a spec of a later family; None for the seed's, hybrids and other names."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,59}", stem) or not (path := ROOT / "specs" / f"{stem}.yaml").is_file():
        return None  # a hybrid, a test's own spec, or a parameter that is no spec name
    spec = ir_of(path).spec
    if spec.family in SEED_FAMILIES:
        return None
    named = spec.reference is not None and spec.reference.model in PROOF_MODELS
    return spec.family, named, ir_of(path).count(spec.img_size).params


@cache
def _big(stem: str) -> bool:
    """A spec in specs/ above LARGE parameters whose reference is timm's (so the meta check can compare them)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,59}", stem) or not (path := ROOT / "specs" / f"{stem}.yaml").is_file():
        return False
    spec = ir_of(path).spec
    timm = spec.reference is not None and spec.reference.package == "timm"
    return timm and ir_of(path).count(spec.img_size).params > LARGE


@cache
def size_variant(stem: str) -> bool:
    """A spec checked on the meta device only: the other sizes of the later families (see SEED_FAMILIES), and any
    model above LARGE parameters but the smallest named model of its family (its smaller siblings, the same
    templates with other numbers, take the CPU checks: ViT-L/H, CaiT-M, VOLO-D4/D5, CLIP ViT-L, SO400M)."""
    later = _later(stem)
    if later is not None and not later[1]:
        return True
    return _big(stem) and stem not in representatives()


@cache
def representatives() -> frozenset[str]:
    """The smallest named model of each later family: it takes every per-spec test, as the seed's specs do."""
    best: dict[str, tuple[int, str]] = {}
    for path in SPECS:
        later = _later(path.stem)
        if later is not None and later[1]:
            best[later[0]] = min(best.get(later[0], (later[2], path.stem)), (later[2], path.stem))
    return frozenset(stem for _, stem in best.values())


def meta_checked(stem: str, test: str) -> bool:
    """Whether per-spec ``test`` leaves spec ``stem`` to the meta-device checks: size variants take only
    META_TESTS; the other named models of a later family also take CPU parity and the MAC count."""
    if test in META_TESTS:
        return False
    if size_variant(stem):
        return True
    later = _later(stem)
    return later is not None and stem not in representatives() and test not in NAMED_TESTS


def one_per_family(test: str) -> list[Path]:
    """The smallest spec of each family that per-spec ``test`` runs on CPU (see meta_checked)."""
    best: dict[str, tuple[int, Path]] = {}
    for path in SPECS:
        if meta_checked(path.stem, test):
            continue
        ir = ir_of(path)
        entry = (ir.count(ir.spec.img_size).params, path)
        best[ir.spec.family] = min(best.get(ir.spec.family, entry), entry)
    return sorted(path for _, path in best.values())


SIZE_VARIANTS = [p for p in SPECS if size_variant(p.stem)]
SLOW_FILES = frozenset({"test_onnx.py", "test_distributed.py", "test_install.py"})
# Per-spec tests every named model of issue 19 takes on CPU (the smallest of each family takes them all).
NAMED_TESTS = frozenset(
    {"test_eval_outputs_equal_timm", "test_macs_equal_flop_counter", "test_pretrained_cfg_and_data_config_equal_timms"}
)
# Per-spec tests that size variants take: the meta-device check, and those that only read the spec or the
# generated text (golden files, published numbers, the CLI's count).
META_TESTS = frozenset(
    {
        "test_size_variant_matches_timm_on_meta",
        "test_emit_equals_committed_file",
        "test_emit_is_deterministic",
        "test_breakdown_sums_to_total",
        "test_every_mac_has_an_operation_type",
        "test_every_spec_points_editors_at_the_schema_and_validates",
        "test_reserved_names_cover_what_every_generated_file_binds",
        "test_child_spec_restates_only_what_differs",
        "test_generated_file_imports_torch_and_the_standard_library_only",
    }
)
SLOW_TESTS = frozenset(
    {
        "test_generated_files_run_without_archgen",
        "test_bad_spec_gives_one_line_error_and_writes_nothing",
        "test_registered_config_matches_timm",
        "test_float16_activation_bytes",
        "test_fake_tensors_save_what_real_ones_do",
        "test_compiles_as_one_graph",
        "test_exports",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    variants = [i for i in items if hasattr(i, "callspec")
                and meta_checked(re.split(r"[-@]", i.callspec.id)[0], getattr(i, "originalname", i.name))]  # fmt: skip
    if variants:
        config.hook.pytest_deselected(items=variants)
        skipped = set(map(id, variants))
        items[:] = [i for i in items if id(i) not in skipped]
    for item in items:
        name = getattr(item, "originalname", item.name)
        spec = re.split(r"[-@]", item.callspec.id)[0] if hasattr(item, "callspec") else None
        if item.path.name in SLOW_FILES or name in SLOW_TESTS or (name in PER_SPEC_TESTS and spec not in FAST_SPECS):
            item.add_marker(pytest.mark.slow)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per core, as many as the memory holds."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 2 * WORKER_MEMORY
    return max(1, min(os.cpu_count() or 1, memory // WORKER_MEMORY))

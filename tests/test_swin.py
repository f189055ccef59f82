"""Swin: window attention and patch merging on non-square and odd grids against timm's modules (outputs,
windows, shifts, masks) and against our own counts and tape; the whole model at sizes that pad and that clamp
the window; and its features (forward_intermediates, feature_info) against timm's."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.models.swin_transformer import PatchMerging as TimmPatchMerging
from timm.models.swin_transformer import SwinTransformerBlock
from torch.utils.flop_counter import FlopCounterMode

from archgen.base import Model, OpCtx, Tokens
from archgen.memory import Tape
from archgen.mixers.window_attention import WindowAttention
from archgen.stages.patch_merging import PatchMerging
from conftest import (
    ROOT,
    assert_close_to_scale,
    assert_counts_exact,
    compile_data,
    ir_of,
    module_of,
    randomised,
    saved_activation_bytes,
)

SWIN_T = ROOT / "specs" / "swin_t.yaml"
DIM, HEADS = 64, 2
MODEL = Model(in_chans=3, num_classes=0, norm_eps=1e-5, token_sizes=(), total_depth=0)


def _saved_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves during ``module(x)`` (parameters and buffers excluded)."""
    skip = {t.untyped_storage()._cdata for t in [*module.parameters(), *module.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage()._cdata not in skip:
            seen.setdefault(t.untyped_storage()._cdata, t.untyped_storage().nbytes())
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module.train()(x)
    return sum(seen.values())


def _macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    """MACs on the meta device, as the model-level checks count them (torch's CPU flash-attention kernel has
    no FlopCounterMode formula; on meta, attention runs as its counted matmuls)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        copy.deepcopy(module).to("meta")(x.to("meta"))
    return counter.get_total_flops() // 2


# (grid, block index): shifted along both sides and padded; clamped to the grid along one side, so shifted
# along the other only; unshifted and padded; one window holding the whole grid
CASES = [((10, 15), 1), ((5, 12), 1), ((10, 15), 0), ((6, 4), 1)]


@pytest.mark.parametrize(("grid", "index"), CASES, ids=[f"{h}x{w}-block{i}" for (h, w), i in CASES])
def test_window_attention_equals_timms_on_non_square_grids(grid: tuple[int, int], index: int) -> None:
    ours = module_of(SWIN_T).WindowAttention(DIM, HEADS, 0.0, 0.0, grid, index)
    ref = SwinTransformerBlock(DIM, grid, num_heads=HEADS, window_size=7, shift_size=0 if index % 2 == 0 else 3)
    randomised(ref)
    ours.load_state_dict(ref.attn.state_dict(), strict=True)
    where = f"{grid} block {index}"
    assert (ours.window, ours.shift) == (ref.window_size, ref.shift_size), where
    if ref.attn_mask is None:
        assert ours.attn_mask is None, where
    else:
        assert torch.equal(ours.attn_mask, ref.attn_mask), f"{where}: attention mask"
    x = torch.randn(2, *grid, DIM)
    with torch.no_grad():
        assert_close_to_scale(where, ours.eval()(x), ref.eval()._attn(x))
    op = WindowAttention(kind="window_attention", window=7)
    c = OpCtx(DIM, HEADS, 0, Tokens(DIM, *grid, "grid"))
    count = op.count(c)
    assert count.params == sum(p.numel() for p in ours.parameters()), f"{where}: params"
    assert count.macs == _macs(ours, x[:1]), f"{where}: MACs"
    tape = Tape(4)
    op.memory(tape, tape.input((2, *grid, DIM)), c)
    assert tape.total == _saved_bytes(ours, x), f"{where}: activation bytes"


@pytest.mark.parametrize("grid", [(7, 10), (6, 4)], ids=["7x10", "6x4"])
def test_patch_merging_equals_timms_on_odd_and_non_square_grids(grid: tuple[int, int]) -> None:
    ours = module_of(SWIN_T).PatchMerging(DIM, 2 * DIM)
    ref = randomised(TimmPatchMerging(DIM))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, *grid, DIM)
    with torch.no_grad():
        assert_close_to_scale(f"patch merging {grid}", ours.eval()(x), ref(x))
    step = PatchMerging(kind="patch_merging", key="downsample")
    s = Tokens(DIM, *grid, "grid")
    out = step.out(s, MODEL)
    assert (out.h, out.w, out.dim) == (-(-grid[0] // 2), -(-grid[1] // 2), 2 * DIM), f"{grid}: output grid"
    count = step.count(s, MODEL)
    assert count.params == sum(p.numel() for p in ours.parameters()), f"{grid}: params"
    assert count.macs == _macs(ours, x[:1]), f"{grid}: MACs"
    tape = Tape(4)
    step.memory(tape, tape.input((2, *grid, DIM)), s, MODEL)
    assert tape.total == _saved_bytes(ours, x), f"{grid}: activation bytes"


def test_every_block_windows_and_shifts_as_timms() -> None:
    """Blocks at odd positions shift by half a window; the last stage's 7x7 grid is one unshifted window."""
    with torch.device("meta"):
        ours = module_of(SWIN_T).swin_t()
        ref = timm.create_model("swin_tiny_patch4_window7_224")
    for i, (stage, theirs) in enumerate(zip(ours.layers, ref.layers, strict=True)):
        for j, (block, their) in enumerate(zip(stage.blocks, theirs.blocks, strict=True)):
            got = (block.attn.window, block.attn.shift)
            assert got == (their.window_size, their.shift_size), f"layers.{i}.blocks.{j}: window, shift {got}"


@pytest.mark.slow
def test_swin_t_at_a_size_that_pads_the_windows() -> None:
    """At 240 the grids are 60, 30, 15 and 8: the last two are padded to whole windows (and merging the 15x15
    grid pads it to 16x16). Outputs equal timm's built at that size; counts exact. (A window clamped to a
    smaller grid is checked on the op above, 6x4.)"""
    img_size = 240
    build = module_of(SWIN_T).swin_t
    ours = build(img_size=img_size).eval()
    ref = randomised(timm.create_model("swin_tiny_patch4_window7_224", img_size=img_size))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, img_size, img_size)
    with torch.no_grad():
        assert_close_to_scale(f"swin_t@{img_size}", ours(x), ref(x))
    assert_counts_exact("swin_t", ir_of(SWIN_T), build, img_size)


@pytest.mark.slow
def test_features_equal_timms() -> None:
    ours = module_of(SWIN_T).swin_t().eval()
    ref = randomised(timm.create_model("swin_tiny_patch4_window7_224"))
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.feature_info == ref.feature_info
    x = torch.randn(1, 3, 224, 224)
    calls = [{"norm": True}, {"indices": [0, 3], "intermediates_only": True}, {"indices": [1], "stop_early": True}]
    with torch.no_grad():
        for kwargs in calls:
            got, want = ours.forward_intermediates(x, **kwargs), ref.forward_intermediates(x, **kwargs)
            if not kwargs.get("intermediates_only"):
                assert_close_to_scale(f"final {kwargs}", got[0], want[0])
                got, want = got[1], want[1]
            assert [t.shape for t in got] == [t.shape for t in want], f"{kwargs}: shapes"
            for i, (a, b) in enumerate(zip(got, want, strict=True)):
                assert_close_to_scale(f"{kwargs} tap {i}", a, b)
        assert_close_to_scale("forward_features (NHWC)", ours.forward_features(x), ref.forward_features(x))


@pytest.mark.parametrize("size", [(256, 320), (200, 232)], ids=["256x320", "200x232"])
def test_dynamic_img_size_equals_timms(size: tuple[int, int]) -> None:
    """Built at 224 with dynamic_img_size, as timm's: other (padded, non-square) inputs keep the windows and
    shifts as built and take a mask made for their grid. Outputs equal timm's."""
    ours = module_of(SWIN_T).swin_t(dynamic_img_size=True).eval()
    ref = randomised(timm.create_model("swin_tiny_patch4_window7_224", dynamic_img_size=True))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert_close_to_scale(f"swin_t dynamic@{size}", ours(x), ref(x))


def test_non_square_windows_equal_timms(tmp_path) -> None:
    """`window: [h, w]` (timm's window_size=(h, w)): 4x8 windows on a 128x256 input, whose grids are 32x64,
    16x32, 8x16 and 4x8 (the last one window, never shifted). Outputs, windows and shifts equal timm's built
    with that window; params, MACs and activation bytes exact."""
    block = [
        {"norm": "layernorm", "op": {"kind": "window_attention", "window": [4, 8]}},
        {"norm": "layernorm", "op": "mlp"},
    ]
    stages = {f"layers.{i}.blocks": {"block": copy.deepcopy(block)} for i in range(4)}
    data = {"extends": "swin_t", "name": "swin_t_4x8", "img_size": [128, 256], "stages": stages}
    ir, _, module = compile_data(data, tmp_path)
    ours = module.swin_t_4x8().eval()
    ref = randomised(timm.create_model("swin_tiny_patch4_window7_224", img_size=(128, 256), window_size=(4, 8)))
    ours.load_state_dict(ref.state_dict(), strict=True)
    for i, (stage, theirs) in enumerate(zip(ours.layers, ref.layers, strict=True)):
        for j, (b, their) in enumerate(zip(stage.blocks, theirs.blocks, strict=True)):
            got = (b.attn.window, b.attn.shift)
            assert got == (their.window_size, their.shift_size), f"layers.{i}.blocks.{j}: window, shift {got}"
    x = torch.randn(2, 3, 128, 256)
    with torch.no_grad():
        assert_close_to_scale("swin_t 4x8 windows", ours(x), ref(x))
    assert_counts_exact("swin_t 4x8 windows", ir, module.swin_t_4x8, (128, 256))
    saved = saved_activation_bytes(ours, torch.float32, False, 2, (128, 256))
    assert ir.memory((128, 256), 2, "float32").activation_bytes == saved, "swin_t 4x8 windows: activation bytes"


CALLS = [  # set_input_size's arguments, in turn: each later call scales from the windows the last one asked for
    [{"img_size": 256}],
    [{"img_size": (224, 448)}],
    [{"img_size": (160, 192)}],
    [{"img_size": 384, "window_size": 12}, {"img_size": 448}],
    [{"img_size": 256, "window_ratio": 8}, {"img_size": (256, 320)}],
    [{"img_size": 256, "window_size": (8, 4)}],
]


@pytest.mark.parametrize("calls", CALLS, ids=lambda c: "+".join("-".join(str(v) for v in kw.values()) for kw in c))
def test_set_input_size_rescales_the_windows_as_timms(calls: list[dict]) -> None:
    """Built at 224, then set to another size: each stage's window scaled with the patch grid (7 * 64 // 56 = 8
    at 256; (7, 14) at 224x448; 5x6 at 160x192, then clamped to the late stages' grids) or asked for anew (a
    size, or the patch grid's divisor, which later sizes then scale from), its table resampled, as timm's
    set_input_size does: windows, shifts, tables and outputs equal timm's."""
    ours = module_of(SWIN_T).swin_t().eval()
    ref = randomised(timm.create_model("swin_tiny_patch4_window7_224"))
    ours.load_state_dict(ref.state_dict(), strict=True)
    for kwargs in calls:
        ours.set_input_size(**kwargs)
        ref.set_input_size(**kwargs)
    size = calls[-1]["img_size"]
    for i, (stage, theirs) in enumerate(zip(ours.layers, ref.layers, strict=True)):
        for j, (b, their) in enumerate(zip(stage.blocks, theirs.blocks, strict=True)):
            got = (b.attn.window, b.attn.shift)
            assert got == (their.window_size, their.shift_size), f"{size} layers.{i}.blocks.{j}: window, shift {got}"
    mine, theirs = ours.state_dict(), ref.state_dict()
    assert mine.keys() == theirs.keys(), f"{size}: state_dict keys"
    for key, value in theirs.items():
        torch.testing.assert_close(mine[key], value, rtol=0, atol=1e-6, msg=f"{size}: {key}")
    hw = (size, size) if isinstance(size, int) else size
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        assert_close_to_scale(f"swin_t set to {size}", ours(x), ref(x))

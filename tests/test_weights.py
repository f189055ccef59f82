"""Pretrained weights the way timm users expect, tested offline: a loopback HTTP server stands in for the
Hugging Face hub ($HF_ENDPOINT), files are written by the `safetensors` package and torch.save, and the
cache is a temporary torch hub folder. Official checkpoints (CeiT, DeepViT) load from a file."""

from __future__ import annotations

import argparse
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from conftest import ROOT, factory

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

DEIT_TI = ROOT / "specs" / "deit_ti.yaml"
HUB_PATH = "timm/deit_tiny_patch16_224.fb_in1k/resolve/main"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        type(self).requests.append(self.path)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder served at http://127.0.0.1:<port>/ as $HF_ENDPOINT, and an empty torch hub cache."""
    served = tmp_path / "served"
    served.mkdir()
    _Quiet.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    torch.hub.set_dir(str(tmp_path / "cache"))
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        torch.hub.set_dir(str(Path.home() / ".cache" / "torch" / "hub"))


def _reference() -> torch.nn.Module:
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return ref


def _publish(served: Path, state: dict[str, torch.Tensor], name: str = "model.safetensors") -> Path:
    folder = served / HUB_PATH
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".safetensors"):
        safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name))
    else:
        torch.save(state, folder / name)
    return folder / name


def _cache() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / "timm--deit_tiny_patch16_224.fb_in1k"


def test_pretrained_downloads_once_and_equals_timm(hub: Path) -> None:
    ref = _reference()
    _publish(hub, ref.state_dict())
    x = torch.randn(2, 3, 224, 224)
    model = factory(DEIT_TI)(pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))
    assert sorted(p.name for p in _cache().iterdir()) == ["model.safetensors"]
    factory(DEIT_TI)(pretrained=True)  # from the cache: no second request
    assert _Quiet.requests == [f"/{HUB_PATH}/model.safetensors"]


def test_pytorch_model_bin_is_the_fallback(hub: Path) -> None:
    ref = _reference()
    _publish(hub, ref.state_dict(), "pytorch_model.bin")
    model = factory(DEIT_TI)(pretrained=True).eval()
    assert torch.equal(model.pos_embed, ref.pos_embed)
    assert sorted(p.name for p in _cache().iterdir()) == ["pytorch_model.bin"]


def test_another_resolution_and_classifier_width(hub: Path) -> None:
    """Positions resampled as timm resamples them; a 10-class head stays as initialised (timm's rule)."""
    from timm.layers import resample_abs_pos_embed

    ref = _reference()
    _publish(hub, ref.state_dict())
    model = factory(DEIT_TI)(pretrained=True, img_size=384, num_classes=10)
    expected = resample_abs_pos_embed(ref.pos_embed.detach(), new_size=[24, 24], num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed.detach(), expected, rtol=0, atol=0)
    assert torch.equal(model.blocks[3].attn.qkv.weight, ref.blocks[3].attn.qkv.weight)
    assert model.head.weight.shape == (10, 192)


def test_truncated_download_names_the_file_and_leaves_no_cache_entry(hub: Path) -> None:
    path = _publish(hub, _reference().state_dict())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{HUB_PATH}/model.safetensors: .*not a whole safetensors file"):
        factory(DEIT_TI)(pretrained=True)
    assert list(_cache().iterdir()) == []


def test_corrupt_cached_file_is_named(hub: Path) -> None:
    _cache().mkdir(parents=True)
    (_cache() / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(ValueError, match=r"timm--deit_tiny_patch16_224.fb_in1k/model.safetensors: not a whole"):
        factory(DEIT_TI)(pretrained=True)


def test_weights_of_another_model_name_the_first_differing_keys(hub: Path) -> None:
    other = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).state_dict()
    _publish(hub, other)
    with pytest.raises(ValueError) as err:
        factory(DEIT_TI)(pretrained=True)
    message = str(err.value)
    assert "model.safetensors: keys differ from the model's" in message
    assert "unexpected ['dist_token', 'head_dist.bias', 'head_dist.weight']" in message  # the file's order


def test_official_checkpoint_file_loads(tmp_path: Path) -> None:
    """CeiT and DeepViT publish on Google Drive only: their training checkpoints keep the weights under
    "model"; a file written like that loads strictly through checkpoint_path=."""
    ceit = ROOT / "specs" / "ceit_t.yaml"
    source = factory(ceit)()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "ceit_tiny.pth"
    torch.save({"model": source.state_dict(), "epoch": 299}, path)
    loaded = factory(ceit)(checkpoint_path=path)
    ours, theirs = loaded.state_dict(), source.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(ValueError, match="has no weights on the Hugging Face hub: pass checkpoint_path="):
        factory(ceit)(pretrained=True)


def test_checkpoint_needing_full_unpickling_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "with_args.pth"
    torch.save({"model": factory(DEIT_TI)().state_dict(), "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(ValueError, match=r"with_args.pth: not loadable with weights_only=True .*weights_only=False"):
        factory(DEIT_TI)(checkpoint_path=path)

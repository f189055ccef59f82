"""Pretrained weights the way timm users get them, tested offline: a fake Hugging Face hub on 127.0.0.1 stands in
for huggingface.co, the cache is a temporary folder that timm's own loader shares, files are written by the
`safetensors` package and torch.save. Official checkpoints (CeiT, DeepViT) load from a file.

huggingface_hub reads $HF_ENDPOINT, $HF_HUB_OFFLINE and the cache folder when it is imported, so the tests in this
process set its constants; one test runs fresh interpreters to show the environment variables themselves work."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, factory, module_of, source_of

timm = pytest.importorskip("timm")
hf_constants = pytest.importorskip("huggingface_hub.constants")
safetensors_torch = pytest.importorskip("safetensors.torch")

DEIT_TI = ROOT / "specs" / "deit_ti.yaml"
REPO = "timm/deit_tiny_patch16_224.fb_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # what X-Repo-Commit says main points at
RESOLVE = f"/{REPO}/resolve/main/"


class FakeHub(http.server.ThreadingHTTPServer):
    """What hf_hub_download needs of the hub: HEAD and GET on /{repo}/resolve/main/{file} answered with ETag (the
    content's sha256, as for LFS files), X-Repo-Commit and Content-Length; a missing file is a 404 with X-Error-Code
    EntryNotFound; "Range: bytes=N-" resumes. The next `cut` GETs send half their body and hang up."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str, str | None, str | None]] = []  # method, file, authorization, range
        self.cut = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def gets(self) -> list[str]:
        return [file for method, file, _, _ in self.log if method == "GET"]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub = self.server
        name = self.path.removeprefix(RESOLVE)
        data = hub.files.get(name) if self.path.startswith(RESOLVE) else None
        if self.path.startswith(RESOLVE):  # not huggingface_hub's other calls (a telemetry registry)
            hub.log.append((self.command, name, self.headers.get("authorization"), self.headers.get("range")))
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = int(self.headers["range"].removeprefix("bytes=").rstrip("-")) if self.headers.get("range") else 0
        self.send_response(206 if start else 200)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if body:
            chunk = data[start:]
            if hub.cut > 0:  # the connection drops halfway through
                hub.cut -= 1
                chunk = chunk[: len(chunk) // 2]
            self.wfile.write(chunk)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Copying weights gains nothing from threads, and two fighting other processes for two cores lose 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def server() -> Iterator[FakeHub]:
    hub = FakeHub()
    thread = threading.Thread(target=hub.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.shutdown()
        hub.server_close()


@pytest.fixture
def hub(server: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The fake hub as huggingface_hub's endpoint, an empty cache, online, no token (what the environment
    variables would have set at import)."""
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return server


def _repo_cache(root: Path) -> Path:
    return root / "models--timm--deit_tiny_patch16_224.fb_in1k"


def _cache() -> Path:
    return _repo_cache(Path(hf_constants.HF_HUB_CACHE))


def _cached_files(repo: Path) -> list[str]:
    """Every file under the repo's cache folder except the lock files and refs/main (the commit it points at)."""
    if not repo.exists():
        return []
    paths = (p for p in repo.rglob("*") if not p.is_dir() or p.is_symlink())
    return sorted(str(p.relative_to(repo)) for p in paths if p.parts[-2:] != ("refs", "main"))


def _blob(data: bytes) -> str:
    return f"blobs/{hashlib.sha256(data).hexdigest()}"


@functools.cache
def _reference() -> dict[str, torch.Tensor]:
    """timm's deit_tiny_patch16_224 with every weight perturbed (so no initialisation matches it by chance)."""
    torch.manual_seed(0)
    ref = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return ref.state_dict()


@functools.cache
def _model() -> torch.nn.Module:
    """One deit_ti that the tests of files which must not load try to load into."""
    return factory(DEIT_TI)()


def _safetensors(state: dict[str, torch.Tensor], tmp: Path) -> bytes:
    path = tmp / "written.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path.read_bytes()


def _torch_file(obj: object, tmp: Path) -> bytes:
    path = tmp / "written.pth"
    torch.save(obj, path)
    return path.read_bytes()


def _assert_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """The model holds exactly these tensors (strict loading makes the output timm's; test_reference checks)."""
    ours = model.state_dict()
    assert set(ours) == set(state), sorted(set(ours) ^ set(state))
    differ = [k for k in ours if not torch.equal(ours[k], state[k])]
    assert not differ, f"{len(differ)} tensors differ, first {differ[:3]}"


def test_download_once_into_the_cache_timm_uses(hub: FakeHub, tmp_path: Path) -> None:
    """Our factory downloads model.safetensors once; a second call and timm's own loader read the cached file."""
    data = _safetensors(_reference(), tmp_path)
    hub.files["model.safetensors"] = data
    _assert_weights(factory(DEIT_TI)(pretrained=True), _reference())
    assert _cached_files(_cache()) == [_blob(data), f"snapshots/{COMMIT}/model.safetensors"]
    _assert_weights(factory(DEIT_TI)(pretrained=True), _reference())
    _assert_weights(timm.create_model("deit_tiny_patch16_224", pretrained=True), _reference())
    assert hub.gets() == ["model.safetensors"]


def test_timm_create_model_of_a_spec_downloads_into_the_same_cache(hub: FakeHub, tmp_path: Path) -> None:
    """timm.create_model("deit_ti", pretrained=True) through archgen.timm downloads with timm's loader (it asks
    for pytorch_model.bin's safe alternative first); our factory then reads that file."""
    import archgen.timm  # noqa: F401  (registers the specs with timm)

    hub.files["model.safetensors"] = _safetensors(_reference(), tmp_path)
    _assert_weights(timm.create_model("deit_ti", pretrained=True), _reference())
    _assert_weights(factory(DEIT_TI)(pretrained=True), _reference())
    assert hub.gets() == ["model.safetensors"]


def test_environment_variables_in_a_fresh_interpreter(server: FakeHub, tmp_path: Path) -> None:
    """$HF_ENDPOINT, $HF_HOME and $HF_TOKEN reach the download; with $HF_HUB_OFFLINE=1 the cached file loads
    without a request, and once it is gone the error says it is not in the cache."""
    server.files["model.safetensors"] = _safetensors(_reference(), tmp_path)
    torch.save(_reference(), tmp_path / "reference.pth")
    code = textwrap.dedent(
        f"""
        import importlib.util, shutil, sys, torch
        spec = importlib.util.spec_from_file_location("deit_ti", {str(ROOT / "generated" / "deit_ti.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ours = module.deit_ti(pretrained=True).state_dict()
        reference = torch.load({str(tmp_path / "reference.pth")!r})
        assert list(ours) == list(reference) and all(torch.equal(ours[k], reference[k]) for k in ours)
        if sys.argv[1] == "offline":
            shutil.rmtree({str(tmp_path / "home" / "hub")!r})
            try:
                module.deit_ti(pretrained=True)
            except Exception as exc:
                print(type(exc).__name__)
        """
    )
    env = {**os.environ, "HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "home"), "HF_TOKEN": "hf_fake"}
    env.update(HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1")
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(var, None)
    online = subprocess.run([sys.executable, "-c", code, "online"], capture_output=True, text=True, env=env)
    assert online.returncode == 0, online.stderr[-2000:]
    assert server.gets() == ["model.safetensors"]
    assert {auth for _, _, auth, _ in server.log} == {"Bearer hf_fake"}
    assert (_repo_cache(tmp_path / "home" / "hub") / "snapshots" / COMMIT / "model.safetensors").is_file()
    requests = len(server.log)
    offline = subprocess.run(
        [sys.executable, "-c", code, "offline"], capture_output=True, text=True, env={**env, "HF_HUB_OFFLINE": "1"}
    )
    assert offline.returncode == 0, offline.stderr[-2000:]
    assert server.log[requests:] == []
    assert offline.stdout.splitlines() == ["LocalEntryNotFoundError"]


def test_pytorch_model_bin_is_the_fallback(hub: FakeHub, tmp_path: Path) -> None:
    hub.files["pytorch_model.bin"] = _torch_file(_reference(), tmp_path)
    _assert_weights(factory(DEIT_TI)(pretrained=True), _reference())
    assert [(method, file) for method, file, _, _ in hub.log] == [
        ("HEAD", "model.safetensors"),
        ("HEAD", "pytorch_model.bin"),
        ("GET", "pytorch_model.bin"),
    ]
    assert f"snapshots/{COMMIT}/pytorch_model.bin" in _cached_files(_cache())


def test_another_resolution_and_classifier_width(hub: FakeHub, tmp_path: Path) -> None:
    """Positions resampled as timm resamples them; a 10-class head stays as initialised (timm's rule), the rest
    loads strictly."""
    from timm.layers import resample_abs_pos_embed

    ref = _reference()
    hub.files["model.safetensors"] = _safetensors(ref, tmp_path)
    torch.manual_seed(3)
    model = factory(DEIT_TI)(pretrained=True, img_size=384, num_classes=10)
    torch.manual_seed(3)
    fresh = factory(DEIT_TI)(img_size=384, num_classes=10)
    expected = resample_abs_pos_embed(ref["pos_embed"], new_size=[24, 24], num_prefix_tokens=1)
    assert torch.equal(model.pos_embed.detach(), expected)
    assert torch.equal(model.head.weight, fresh.head.weight) and model.head.weight.shape == (10, 192)
    state = model.state_dict()
    loaded = [k for k in ref if k != "pos_embed" and not k.startswith("head.")]
    assert len(loaded) == len(state) - 3 and all(torch.equal(state[k], ref[k]) for k in loaded)


@pytest.mark.parametrize(
    ("spec", "reference", "num_classes", "drop_head"),
    [
        ("deit_ti", "deit_tiny_patch16_224", 0, False),  # a backbone: the file's classifier is left out
        ("deit_ti", "deit_tiny_patch16_224", 1000, True),  # a file without a classifier: the model keeps its own
        ("deit_ti_distilled", "deit_tiny_distilled_patch16_224", 10, False),  # both classifiers stay initialised
    ],
)
def test_classifier_rule(tmp_path: Path, spec: str, reference: str, num_classes: int, drop_head: bool) -> None:
    ref = timm.create_model(reference, pretrained=False).state_dict()
    heads = ("head.", "head_dist.")
    if drop_head:
        ref = {k: v for k, v in ref.items() if not k.startswith(heads)}
    torch.save(ref, tmp_path / "weights.pth")
    torch.manual_seed(5)
    model = factory(ROOT / "specs" / f"{spec}.yaml")(checkpoint_path=tmp_path / "weights.pth", num_classes=num_classes)
    torch.manual_seed(5)
    fresh = factory(ROOT / "specs" / f"{spec}.yaml")(num_classes=num_classes).state_dict()
    state = model.state_dict()
    own_heads = [k for k in state if k.startswith(heads)]
    assert len(own_heads) == (0 if num_classes == 0 else 4 if "distilled" in spec else 2), own_heads
    assert all(torch.equal(state[k], fresh[k]) for k in own_heads)
    _assert_weights(
        model, {**{k: v for k, v in ref.items() if not k.startswith(heads)}, **{k: state[k] for k in own_heads}}
    )


def test_a_dropped_transfer_resumes(hub: FakeHub, tmp_path: Path) -> None:
    """The connection drops halfway: huggingface_hub resumes with a Range request (after its 1 s pause), the
    model loads, and no partial file is left."""
    data = _safetensors(_reference(), tmp_path)
    hub.files["model.safetensors"] = data
    hub.cut = 1
    _assert_weights(factory(DEIT_TI)(pretrained=True), _reference())
    ranges = [byte_range for method, _, _, byte_range in hub.log if method == "GET"]
    assert len(ranges) == 2 and ranges[0] is None, ranges
    assert 0 < int(ranges[1].removeprefix("bytes=").removesuffix("-")) <= len(data) // 2, ranges  # what it had
    assert _cached_files(_cache()) == [_blob(data), f"snapshots/{COMMIT}/model.safetensors"]


def test_a_transfer_that_keeps_dropping_leaves_nothing_behind(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _safetensors(_reference(), tmp_path)
    hub.files["model.safetensors"] = data
    hub.cut = 100
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # huggingface_hub's pause between its retries
    with pytest.raises(Exception, match="peer closed connection"):
        factory(DEIT_TI)(pretrained=True)
    assert [name for name in _cached_files(_cache()) if not name.startswith(".no_exist")] == []
    hub.cut = 0
    _assert_weights(factory(DEIT_TI)(pretrained=True), _reference())
    assert _cached_files(_cache()) == [_blob(data), f"snapshots/{COMMIT}/model.safetensors"]


def _truncated(tmp: Path) -> bytes:
    data = _safetensors(_reference(), tmp)
    return data[: len(data) // 2]


def _other_model(tmp: Path) -> bytes:
    return _safetensors(timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False).state_dict(), tmp)


BAD_DOWNLOADS: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "truncated": (_truncated, "not a safetensors file (Error while deserializing header"),
    "garbage": (lambda tmp: b"<html>Service unavailable</html>", "not a safetensors file"),
    "other_model": (_other_model, 'Unexpected key(s) in state_dict: "dist_token", "head_dist.bias", "head_dist.'),
}


@pytest.mark.parametrize("case", BAD_DOWNLOADS)
def test_a_download_that_does_not_load_leaves_the_cache(hub: FakeHub, tmp_path: Path, case: str) -> None:
    """Served whole (the size matches) but not this model's weights: the error names the cached file, which is
    removed, so the next call downloads again (and gets the fixed file)."""
    make, message = BAD_DOWNLOADS[case]
    hub.files["model.safetensors"] = make(tmp_path)
    with pytest.raises(ValueError) as err:
        module_of(DEIT_TI).load_pretrained(_model())
    snapshot = _cache() / "snapshots" / COMMIT / "model.safetensors"
    assert str(err.value).startswith(f"{snapshot}: "), err.value
    assert message in str(err.value), err.value
    assert [name for name in _cached_files(_cache()) if not name.startswith(".no_exist")] == []
    hub.files["model.safetensors"] = _safetensors(_reference(), tmp_path)
    _assert_weights(factory(DEIT_TI)(pretrained=True), _reference())
    assert hub.gets() == ["model.safetensors", "model.safetensors"]


@pytest.mark.parametrize("wrap", ["safetensors", "torch", "model", "state_dict"])
def test_checkpoint_path_formats(tmp_path: Path, wrap: str) -> None:
    """A safetensors file, a torch state dict, and training checkpoints with the weights under "model" (CeiT,
    DeepViT) or "state_dict", next to other entries; a str path or a Path."""
    if wrap == "safetensors":
        path = tmp_path / "weights.safetensors"
        path.write_bytes(_safetensors(_reference(), tmp_path))
    else:
        path = tmp_path / "checkpoint.pth"
        torch.save(_reference() if wrap == "torch" else {wrap: _reference(), "epoch": 299, "lr": 1e-3}, path)
    _assert_weights(factory(DEIT_TI)(checkpoint_path=str(path) if wrap == "torch" else path), _reference())


def test_official_checkpoint_of_a_model_without_hub_weights(tmp_path: Path) -> None:
    ceit = ROOT / "specs" / "ceit_t.yaml"
    source = factory(ceit)()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "ceit_tiny.pth"
    torch.save({"model": source.state_dict(), "epoch": 299}, path)
    _assert_weights(factory(ceit)(checkpoint_path=path), source.state_dict())
    with pytest.raises(ValueError, match="ceit_t has no weights on the hub: pass checkpoint_path="):
        factory(ceit)(pretrained=True)


@contextmanager
def _fails_within(seconds: int) -> Iterator[None]:
    """Turns a hang (reading a FIFO, /dev/zero) into a failure (where there are alarms)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fail(*args: object) -> None:
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX files")
@pytest.mark.parametrize("kind", ["fifo", "fifo.safetensors", "/dev/zero", "/dev/null", "folder"])
def test_only_regular_files_are_read(tmp_path: Path, kind: str) -> None:
    if kind.startswith("fifo"):
        path = tmp_path / kind
        os.mkfifo(path)
    elif kind == "folder":
        path = tmp_path / "weights.safetensors"
        path.mkdir()
    else:
        path = Path(kind)
    with _fails_within(5), pytest.raises(ValueError, match=f"^{path}: not a regular file$"):
        module_of(DEIT_TI).load_pretrained(_model(), path)


def _safetensors_with(header: dict, body: bytes, tail: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body + tail


_F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
MALFORMED_SAFETENSORS = {
    "overlapping": _safetensors_with({"a": _F32, "b": {**_F32, "data_offsets": [4, 12]}}, bytes(12)),
    "out_of_range": _safetensors_with({"a": {**_F32, "data_offsets": [0, 16]}, "b": _F32}, bytes(8)),
    "short_body": _safetensors_with({"a": _F32}, bytes(4)),
    "trailing_bytes": _safetensors_with({"a": _F32}, bytes(8), b"\0" * 4),
    "metadata_not_strings": _safetensors_with({"__metadata__": {"epoch": 3}, "a": _F32}, bytes(8)),
    "metadata_not_a_map": _safetensors_with({"__metadata__": [1], "a": _F32}, bytes(8)),
    "unknown_dtype": _safetensors_with({"a": {**_F32, "dtype": "F31"}}, bytes(8)),
    "shape_and_offsets_disagree": _safetensors_with({"a": {**_F32, "shape": [3]}}, bytes(8)),
    "header_length_past_the_end": struct.pack("<Q", 1 << 40) + b"{}",
    "header_not_json": struct.pack("<Q", 8) + b"{not js}",
    "empty": b"",
}


@pytest.mark.parametrize("case", MALFORMED_SAFETENSORS)
def test_malformed_safetensors_are_refused_by_name(tmp_path: Path, case: str) -> None:
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(MALFORMED_SAFETENSORS[case])
    with pytest.raises(ValueError, match=f"^{path}: not a safetensors file "):
        module_of(DEIT_TI).load_pretrained(_model(), path)


def _weights() -> dict[str, torch.Tensor]:
    return _model().state_dict()


NOT_STATE_DICTS: dict[str, Callable[[], object]] = {
    "list": lambda: list(_weights().values()),
    "tensor": lambda: torch.zeros(3),
    "dict_of_numbers": lambda: {"pos_embed": 1.0, "cls_token": 2},
    "model_of_strings": lambda: {"model": {"head.weight": "zeros"}},
    "tensor_under_int_key": lambda: {**_weights(), 7: torch.zeros(1)},
    "position_table_of_another_rank": lambda: {**_weights(), "pos_embed": torch.zeros(197)},
    "empty_dict": dict,
}


@pytest.mark.parametrize("case", NOT_STATE_DICTS)
def test_torch_files_that_are_not_this_models_state_dict(tmp_path: Path, case: str) -> None:
    path = tmp_path / f"{case}.pth"
    torch.save(NOT_STATE_DICTS[case](), path)
    with pytest.raises(ValueError, match=f"^{path}: "):
        module_of(DEIT_TI).load_pretrained(_model(), path)


@pytest.mark.parametrize(
    "content", [b"", b"garbage", b"PK\x03\x04 half a zip", pytest.param(None, id="needs_full_unpickling")]
)
def test_unreadable_torch_files_are_refused_by_name(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "checkpoint.pth"
    if content is None:  # an argparse.Namespace next to the weights, as many training scripts save
        torch.save({"model": _weights(), "args": argparse.Namespace(lr=1e-3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^{path}: not loadable with torch.load\(weights_only=True\) \("):
        module_of(DEIT_TI).load_pretrained(_model(), path)


def _small_files() -> dict[str, bytes]:
    """Small valid checkpoints of each format, for mutating."""
    state = {"pos_embed": torch.arange(6.0).reshape(1, 3, 2), "head.bias": torch.ones(2, dtype=torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        return {".safetensors": _safetensors(state, Path(tmp)), ".pth": _torch_file({"model": state}, Path(tmp))}


SMALL_FILES = _small_files()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from(sorted(SMALL_FILES)),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=4),
)
def test_mutated_checkpoints_are_always_a_value_error_naming_the_file(
    tmp_path: Path, suffix: str, cut: int, flips: list[tuple[int, int]]
) -> None:
    """A fuzz of truncated and bit-flipped files of both formats: whatever the bytes, loading ends in a ValueError
    naming the file (they hold no deit_ti weights), never another exception or a hang."""
    data = bytearray(SMALL_FILES[suffix][: len(SMALL_FILES[suffix]) - cut])
    for at, mask in flips:
        if data:
            data[at % len(data)] ^= mask
    path = tmp_path / f"mutated{suffix}"
    path.write_bytes(bytes(data))
    with _fails_within(10), pytest.raises(ValueError, match=f"^{path}: "):
        module_of(DEIT_TI).load_pretrained(_model(), path)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux memory maps")
def test_safetensors_are_memory_mapped_not_copied(tmp_path: Path) -> None:
    """The tensors read from a 64 MB file are views of a mapping of the file: the process's resident memory
    grows by far less than the file's size (the old reader copied it: about 2x)."""
    path = tmp_path / "large.safetensors"
    safetensors_torch.save_file({"w": torch.ones(16 << 20)}, str(path))
    before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    state = module_of(DEIT_TI).read_checkpoint(path)
    grown = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") - before
    assert str(path) in Path("/proc/self/maps").read_text()
    assert grown < path.stat().st_size // 8, f"resident memory grew by {grown:,} bytes for a {path.stat().st_size:,}"
    assert state["w"].shape == (16 << 20,) and float(state["w"][-1]) == 1.0


def test_missing_libraries_get_a_one_line_hint(tmp_path: Path) -> None:
    """Importing and building the model needs torch alone; loading weights without huggingface_hub or
    safetensors says what to install, and a torch checkpoint still loads."""
    torch.save(_reference(), tmp_path / "weights.pth")
    (tmp_path / "weights.safetensors").write_bytes(_safetensors(_reference(), tmp_path))
    code = textwrap.dedent(
        f"""
        import importlib.util, sys, torch
        spec = importlib.util.spec_from_file_location("deit_ti", {str(ROOT / "generated" / "deit_ti.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with torch.device("meta"):  # the libraries are looked for before any weight is read
            module.deit_ti()
            assert not {{"huggingface_hub", "safetensors"}} & set(sys.modules), "imported with the module"
            sys.modules["huggingface_hub"] = sys.modules["safetensors"] = None  # as if not installed
            for kwargs in ({{"pretrained": True}}, {{"checkpoint_path": {str(tmp_path / "weights.safetensors")!r}}}):
                try:
                    module.deit_ti(**kwargs)
                except ImportError as exc:
                    print(type(exc).__name__, exc)
        module.deit_ti(checkpoint_path={str(tmp_path / "weights.pth")!r})
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "ImportError downloads need huggingface_hub: pip install huggingface_hub safetensors",
        "ImportError safetensors files need the safetensors library: pip install safetensors",
    ]


@pytest.mark.parametrize(
    "line",
    [
        "import huggingface_hub",
        "from huggingface_hub import upload_folder",
        "from huggingface_hub.hf_api import HfApi",
        "from safetensors.torch import save_file",
        "import json",
        "import os",
    ],
)
def test_generated_code_imports_only_what_the_loader_uses(line: str) -> None:
    """The allow-list behind every emitted file opens huggingface_hub and safetensors name by name."""
    from archgen.safety import UnsafeOutput, check_source

    assert check_source(source_of(DEIT_TI), "deit_ti.py")
    with pytest.raises(UnsafeOutput, match="generated code may not use"):
        check_source(f"def load() -> None:\n    {line}\n", "injected.py")

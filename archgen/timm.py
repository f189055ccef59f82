"""timm integration: after ``import archgen.timm`` every spec of the built-in library, and of your spec folder
(``$ARCHGEN_SPECS`` or ``./specs``), is a timm model under its spec name.

``timm.create_model("ceit_t", pretrained=..., num_classes=..., features_only=...)`` then builds archgen's
module, so timm's train, validate and benchmark scripts run CeiT, DeepViT and every other spec unchanged.
A spec is compiled on first use into the same code ``archgen build`` writes; its pretrained cfg (timm's
fields, the hub id of the reference weights) is registered with it, so ``pretrained=True`` downloads through
timm and ``features_only=True`` wraps the model with timm's ``FeatureGetterNet`` (``forward_intermediates``),
taking the last ``DEFAULT_TAPS`` taps (a pyramid's: all of them) unless ``out_indices`` says otherwise, as timm does.
"""

from __future__ import annotations

import functools
import itertools
import linecache
import sys
import types
import warnings
from pathlib import Path
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, model_entrypoint, register_model

from archgen import features, specs
from archgen.build import compile_path
from archgen.compiler import IR
from archgen.emit import emit, pretrained_cfg, size_free
from archgen.geometry import size_of

# timm's register_model reads the entrypoint's module for its pretrained cfgs
default_cfgs: dict[str, Any] = {}
# features_only's default out_indices: the last 3 taps, timm's default for ViT, DeiT, CaiT and VOLO
DEFAULT_TAPS = 3


@functools.cache
def module(path: Path) -> types.ModuleType:
    """The generated module of the spec at ``path``, compiled and executed once. Its source is registered with
    linecache under ``<archgen: generated/<name>.py from <spec>>``, so tracebacks and ``inspect`` show the
    generated lines; the module is in ``sys.modules`` (``archgen.timm.<name>``), so its models pickle."""
    ((target, text),) = emit(compile_path(path)).items()
    filename = f"<archgen: {target} from {path}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)  # never re-read
    mod = types.ModuleType(f"{__name__}.{path.stem}")
    mod.__file__ = filename
    sys.modules[mod.__name__] = mod
    exec(compile(text, filename, "exec"), mod.__dict__)  # archgen's own output, checked by emit
    return mod


def default_out_indices(ir: IR) -> int:
    """How many of the last taps features_only returns by default: every stage of a pyramid (each tap at a
    coarser stride than the one before: timm's PVT-v2, Swin, PiT, Twins), else the last ``DEFAULT_TAPS``
    (all of them where there are fewer)."""
    taps = features.taps(ir.walk(ir.spec.img_size), ir.spec.img_size, None)
    if taps is None:
        return DEFAULT_TAPS
    strides = [t.reduction for t in taps.taps]
    if len(strides) > 1 and all(a < b for a, b in itertools.pairwise(strides)):
        return len(strides)
    return min(DEFAULT_TAPS, len(strides))


def instance_cfg(ir: IR, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The pretrained_cfg fields that depend on the constructor's arguments: the input size the model is
    built for and whether it takes others (dynamic_img_size), as the model itself reports them."""
    size = size_of(kwargs.get("img_size", ir.spec.img_size))
    fixed = not kwargs.get("dynamic_img_size") and not size_free(ir)  # a size-free model takes any size
    return {"input_size": (ir.spec.in_chans, *size), "fixed_input_size": fixed}


def timm_feature_keys(model: Any, wrapper: str) -> Any:
    """Save and load a features_only model (timm's FeatureGetterNet on ours: keys `model.…`) under the keys of
    the timm features_only wrapper the spec names (``wrapper``: the spec's `features_only.keys`), so
    a detector's checkpoint made with either backbone loads into the other; keys of our own layout load too.
    `list` re-roots the model's children and flattens a container of numbered stages (`layers.0.` to
    `layers_0.`), as timm's FeatureListNet does with its Sequentials; `hook` puts them under `body.`."""
    if wrapper == "getter":
        return model

    def theirs(key: str) -> str:
        key = key.removeprefix("model.")
        if wrapper == "hook":
            return f"body.{key}"
        child, _, rest = key.partition(".")
        index, dot, tail = rest.partition(".")
        return f"{child}_{index}.{tail}" if dot and index.isdigit() else key

    ours = {theirs(key): key for key in model.state_dict()}

    def save(module: Any, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:  # re-added in order, at the end as before
            state_dict[prefix + theirs(key[len(prefix) :])] = state_dict.pop(key)

    def load(module: Any, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
        for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix) :] in ours]:
            state_dict[prefix + ours[key[len(prefix) :]]] = state_dict.pop(key)

    model.register_state_dict_post_hook(save)
    model.register_load_state_dict_pre_hook(load)
    return model


def register(path: Path) -> str | None:
    """Register the spec at ``path`` with timm under its name; returns the name, or None where timm has a model of
    that name itself (replacing it would also replace the reference every spec is checked against)."""
    ir = compile_path(path)
    name, ref = ir.spec.name, ir.spec.reference
    if is_model(name) and model_entrypoint(name).__module__ != __name__:
        warnings.warn(
            f"{path}: timm has its own model {name!r}, which archgen leaves in place: rename the spec", stacklevel=2
        )
        return None
    cfg = {k: v for k, v in pretrained_cfg(ir) if k not in ("architecture", "tag")} | instance_cfg(ir, {})
    tag = ref.tag if ref is not None and ref.package == "timm" and ref.tag else None
    default_cfgs.update(generate_default_cfgs({f"{name}.{tag}" if tag else name: cfg}))
    taps = default_out_indices(ir)

    def create(pretrained: bool = False, **kwargs: Any) -> Any:
        model_cls = getattr(module(path), ir.spec.class_name)
        # features_only: timm's FeatureGetterNet on forward_intermediates, with timm's default taps
        wrapper = ir.spec.features_only
        feature_cfg = {
            "feature_cls": "getter",
            "out_indices": kwargs.pop("out_indices", taps),
            "output_fmt": kwargs.pop("output_fmt", wrapper.output_fmt),
            "prune": wrapper.keys != "hook",  # timm's FeatureHookNet keeps every stage and the final norm
        }
        overlay = instance_cfg(ir, kwargs) | (kwargs.pop("pretrained_cfg_overlay", None) or {})
        features_only = kwargs.get("features_only", False)
        model = build_model_with_cfg(
            model_cls, name, pretrained, feature_cfg=feature_cfg, pretrained_cfg_overlay=overlay, **kwargs
        )
        if features_only and not feature_cfg["prune"]:
            model.model.reset_classifier(0, "")  # and drops the classifier(s) alone
        return timm_feature_keys(model, wrapper.keys) if features_only else model

    create.__name__ = create.__qualname__ = name
    create.__module__ = __name__
    create.__doc__ = f"{ir.spec.title}: archgen's {name} (see {ir.loaded.source})."
    register_model(create)
    return name


def register_all() -> list[str]:
    """Every spec in the search folders (yours first); a name yours redefines is registered once, yours."""
    seen: dict[str, Path] = {}
    for folder in reversed(specs.search_dirs()):
        seen.update({p.stem: p for p in sorted(folder.glob("*.yaml"))})
    return [name for path in seen.values() if (name := register(path)) is not None]


registered = register_all()

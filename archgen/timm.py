"""timm integration: after ``import archgen.timm`` every spec of the built-in library, and of your spec folder
(``$ARCHGEN_SPECS`` or ``./specs``), is a timm model under its spec name.

``timm.create_model("ceit_t", pretrained=..., num_classes=..., features_only=...)`` then builds archgen's
module, so timm's train, validate and benchmark scripts run CeiT, DeepViT and every other spec unchanged.
A spec is compiled on first use into the same code ``archgen build`` writes; its pretrained cfg (timm's
fields, the hub id of the reference weights) is registered with it, so ``pretrained=True`` downloads through
timm and ``features_only=True`` wraps the model with timm's ``FeatureGetterNet`` (``forward_intermediates``).
"""

from __future__ import annotations

import functools
import types
from pathlib import Path
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from archgen import specs
from archgen.build import compile_path
from archgen.emit import emit, pretrained_cfg

# timm's register_model reads the entrypoint's module for its pretrained cfgs
default_cfgs: dict[str, Any] = {}


@functools.cache
def module(path: Path) -> types.ModuleType:
    """The generated module of the spec at ``path``, compiled and executed once."""
    (text,) = emit(compile_path(path)).values()
    mod = types.ModuleType(f"{__name__}.{path.stem}")
    exec(compile(text, str(path), "exec"), mod.__dict__)  # archgen's own output, checked by emit
    return mod


def register(path: Path) -> str:
    """Register the spec at ``path`` with timm under its name; returns the name."""
    ir = compile_path(path)
    name, ref = ir.spec.name, ir.spec.reference
    cfg = {k: v for k, v in pretrained_cfg(ir) if k not in ("architecture", "tag")}
    tag = ref.tag if ref is not None and ref.package == "timm" and ref.tag else None
    default_cfgs.update(generate_default_cfgs({f"{name}.{tag}" if tag else name: cfg}))

    def create(pretrained: bool = False, **kwargs: Any) -> Any:
        model_cls = getattr(module(path), ir.spec.class_name)
        feature_cfg = {"feature_cls": "getter"}  # features_only: timm's FeatureGetterNet on forward_intermediates
        return build_model_with_cfg(model_cls, name, pretrained, feature_cfg=feature_cfg, **kwargs)

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
    return [register(path) for path in seen.values()]


registered = register_all()

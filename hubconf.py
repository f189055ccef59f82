"""torch.hub entry points: ``torch.hub.load("<clone>", "volo_d3", source="local")``.

Each entry is a generated module's factory, loaded from ``generated/`` by file path (archgen itself is not
imported); ``pretrained=True`` loads the reference weights (timm's, from the Hugging Face hub, through the cache
timm uses) with huggingface_hub and safetensors, which the generated factory imports only then: torch.hub's check
needs torch alone, so a model without weights loads where neither library is installed. torch.hub lists every
public callable here as an entry point, so the helpers' own names start with an underscore and modules are
imported whole.
"""

from __future__ import annotations

import importlib.util
import pathlib
import typing

dependencies = ["torch"]

_GENERATED = pathlib.Path(__file__).resolve().parent / "generated"


def _factory(name: str) -> typing.Any:
    spec = importlib.util.spec_from_file_location(f"archgen_hub_{name}", _GENERATED / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def _entry(name: str) -> typing.Any:
    def load(pretrained: bool = False, **kwargs: typing.Any) -> typing.Any:
        return _factory(name)(pretrained=pretrained, **kwargs)

    load.__name__ = name
    load.__doc__ = f"The generated {name} module (see generated/{name}.py)."
    return load


for _path in sorted(_GENERATED.glob("*.py")):
    globals()[_path.stem] = _entry(_path.stem)

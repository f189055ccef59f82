"""torch.hub entry points: ``torch.hub.load("<clone>", "volo_d3", source="local")``.

Each entry is a generated module's factory, loaded from ``generated/`` by file path, so loading needs
only torch (archgen itself is not imported).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

dependencies = ["torch"]

_GENERATED = Path(__file__).resolve().parent / "generated"


def _factory(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"archgen_hub_{name}", _GENERATED / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def _entry(name: str) -> Any:
    def load(pretrained: bool = False, **kwargs: Any) -> Any:
        if pretrained:
            raise ValueError(f"{name}: archgen ships no weights; load a checkpoint with load_state_dict")
        return _factory(name)(**kwargs)

    load.__name__ = name
    load.__doc__ = f"The generated {name} module (see generated/{name}.py)."
    return load


for _path in sorted(_GENERATED.glob("*.py")):
    globals()[_path.stem] = _entry(_path.stem)

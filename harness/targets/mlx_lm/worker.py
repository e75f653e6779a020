"""The mlx-lm side of the `mlx-lm` target: a worker the harness starts from the mlx-lm environment's Python (no torch
there), answering one JSON request per line on stdin with one JSON reply per line on stdout. It imports nothing of
the harness (which needs torch); what it reports the harness judges.

Requests (`op`), and what each reply's `value` holds:
- `hello` {families}: the versions it runs, and which of `families` mlx-lm builds with switch (MoE) layers, each with
  the module its model type resolves to (as `mlx_lm.utils` resolves it).
- `fields` {config}: the fields of the `ModelArgs` the config's model type resolves to, and which have no default.
- `build` {config, tokens}: what mlx-lm builds from that config.json dict, as `load_model` builds it (the model
  type's `ModelArgs.from_dict`, then its `Model`): the expert count of each switch layer (the leading dim of its
  tensors) and the top-k of each switch-layer call in one forward over `tokens` tokens (the width of the expert
  indices the layer is handed), keyed by module path.
- `load_run` {directory, config, tokens}: the model `load_model` loads strictly from `directory` (its safetensors,
  with `config` as the config: what load_model merges over config.json), run over the token ids: `logits` (float32,
  base64 of [tokens, vocab]); then that model saved as mlx-lm saves a converted one (`save_model`, `save_config`)
  and loaded strictly again, sanitize and all: `reloaded` (its logits), or `reload_error` (what raised).
A request that raises gets {"error": {"type", "message", "where"}} (`where`: the file and line it was raised at).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Replies go on the real stdout; anything the library prints goes to stderr, so it cannot corrupt the protocol.
REPLIES = sys.stdout
sys.stdout = sys.stderr


def _switch_classes() -> tuple[Any, ...]:
    from mlx_lm.models import switch_layers

    return tuple(getattr(switch_layers, name) for name in ("SwitchGLU", "SwitchMLP"))


def _classes(config: dict[str, Any]) -> tuple[Any, Any]:
    """(Model, ModelArgs) as `load_model` resolves them (a module may take its Model from another: solar_open)."""
    from mlx_lm.utils import _get_classes

    return _get_classes(config)  # type: ignore[no-any-return]


def _uses_switch_layers(module: Any) -> bool:
    """Whether the model module, or a sibling module it imports from, transitively (qwen3_5_moe takes its model from
    qwen3_5, which takes its MoE block from qwen3_next), builds switch (MoE) layers."""
    folder = Path(str(module.__file__)).parent
    pending, seen = [Path(str(module.__file__)).stem], {"switch_layers"}
    while pending:
        name = pending.pop()
        if name in seen or not (folder / f"{name}.py").is_file():
            continue
        seen.add(name)
        source = (folder / f"{name}.py").read_text()
        if "SwitchGLU" in source or "SwitchMLP" in source:
            return True
        pending += re.findall(r"^from \.(\w+) import", source, re.M)
    return False


def hello(families: list[str]) -> dict[str, Any]:
    versions = {name: importlib.metadata.version(name) for name in ("mlx", "mlx-lm", "transformers")}
    served = {}
    for family in families:
        try:
            model_class, _ = _classes({"model_type": family})
        except BaseException:  # noqa: BLE001 - a model type it has no module for (or one that exits on import)
            continue
        module = sys.modules[model_class.__module__]
        if _uses_switch_layers(module):
            served[family] = module.__name__
    return {"versions": versions, "families": served}


def fields(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of the ModelArgs dataclass the config's model type resolves to: all, and those without a default."""
    import dataclasses

    every = dataclasses.fields(_classes(config)[1])
    required = [f.name for f in every if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    return {"fields": [f.name for f in every], "required": required}


def build(config: dict[str, Any], tokens: int) -> dict[str, Any]:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    model_class, args_class = _classes(config)
    model = model_class(args_class.from_dict(config))
    switch = _switch_classes()
    names = {id(m): name for name, m in model.named_modules() if isinstance(m, switch)}
    # SwitchGLU's projections are gate_proj/up_proj/down_proj, SwitchMLP's fc1/fc2: each weight is [E, out, in]
    experts = {name: int(next(w for _, w in tree_flatten(m.parameters()) if w.ndim == 3).shape[0])
               for name, m in model.named_modules() if isinstance(m, switch)}
    top_k: dict[str, list[int]] = {}
    originals = {cls: cls.__call__ for cls in switch}

    def observed(original: Any) -> Any:
        def call(self: Any, x: Any, indices: Any) -> Any:
            top_k.setdefault(names.get(id(self), "?"), []).append(int(indices.shape[-1]))
            return original(self, x, indices)
        return call

    for cls, original in originals.items():
        setattr(cls, "__call__", observed(original))  # noqa: B010 - observe the library's own call, then undo
    try:
        mx.eval(model(mx.array([[(7 * i + 1) % 97 for i in range(tokens)]])))
    finally:
        for cls, original in originals.items():
            setattr(cls, "__call__", original)  # noqa: B010
    return {"experts": experts, "top_k": {name: sorted(set(ks)) for name, ks in top_k.items()}}


def _logits(model: Any, tokens: list[int]) -> str:
    import base64

    import mlx.core as mx
    import numpy as np

    out = model(mx.array([tokens]))
    return base64.b64encode(np.array(out[0].astype(mx.float32)).tobytes()).decode()


def load_run(directory: str, config: dict[str, Any], tokens: list[int]) -> dict[str, Any]:
    from mlx_lm.utils import load_model, save_config, save_model

    model, loaded_config = load_model(Path(directory), strict=True, model_config=config)
    out: dict[str, Any] = {"logits": _logits(model, tokens)}
    saved = Path(directory) / "saved-by-mlx-lm"
    save_model(saved, model)
    save_config(dict(loaded_config), saved / "config.json")
    try:
        again, _ = load_model(saved, strict=True)
        out["reloaded"] = _logits(again, tokens)
    except Exception as exc:  # noqa: BLE001 - the harness judges it
        out["reload_error"] = {"type": type(exc).__name__, "message": str(exc)[:2000], "where": _where(exc)}
    return out


OPS: dict[str, Callable[..., Any]] = {"hello": hello, "fields": fields, "build": build, "load_run": load_run}


def _where(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    return f"{frame.filename}:{frame.lineno}" if frame else "?"


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply: dict[str, Any] = {"value": OPS[request.pop("op")](**request)}
        except BaseException as exc:  # noqa: BLE001 - every failure of the library is the harness's to judge
            reply = {"error": {"type": type(exc).__name__, "message": str(exc), "where": _where(exc)}}
        REPLIES.write(json.dumps(reply) + "\n")
        REPLIES.flush()


if __name__ == "__main__":
    main()

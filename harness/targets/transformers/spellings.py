"""Config spellings of the installed transformers: every name a family's config accepts for its expert
count and top-k, and what the model built from a config set through one of them actually uses.

Names are read from the family's own config class (constructor parameters, stored `to_dict()` keys,
`attribute_map` aliases) and kept when they are spellings of NOTES §4. What the model uses is measured
on the built model: the experts tensors' leading dim for the expert count, the expert slots each token
fills in a forward pass for the top-k. Nothing is read back from the config.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.targets.base import Spelling, ValuesRejected
from harness.targets.transformers.blocks import ROUTER_NAMES
from harness.targets.transformers.tiny_model import base_config, build_sized, unbuildable
from harness.tiny_configs import moe_path, sub_config
from harness.verdict import harness_limit, not_applicable
from reference.config import NUM_EXPERTS_SPELLINGS, TOP_K_SPELLINGS
from reference.families import UNSUPPORTED_FAMILIES
from reference.moe import init_block

QUANTITIES: dict[str, tuple[str, ...]] = {"num_experts": NUM_EXPERTS_SPELLINGS, "top_k": TOP_K_SPELLINGS}
FORMS = ("constructor", "config.json", "setattr")
# Tokens fed through the built model to see which experts each one is sent to.
PROBE_TOKENS = 12

Settings = tuple[tuple[Spelling, int], ...]
Observations = dict[str, list[tuple[str, int]]]


def _node(tree: dict[str, Any], path: str) -> dict[str, Any]:
    for part in path.split(".") if path else ():
        tree = tree[part]
    return tree


def config_tree(family: str) -> tuple[Any, dict[str, Any], str]:
    """(config class, a fresh serialised copy of the family's tiny config, its MoE path)."""
    config = base_config(family)
    tree = copy.deepcopy(config.to_dict())
    tree.pop("transformers_version", None)
    return type(config), tree, moe_path(config) or ""


def from_tree(cls: Any, tree: dict[str, Any]) -> Any:
    """The config class called on a serialised tree (its `model_type` is the class's own)."""
    return cls(**{k: v for k, v in tree.items() if k != "model_type"})


def with_moe_fields(family: str, fields: dict[str, Any]) -> Any:
    """The family's tiny config rebuilt by its constructor with `fields` set on its MoE (sub-)config."""
    cls, tree, path = config_tree(family)
    _node(tree, path).update(fields)
    return from_tree(cls, tree)


@functools.cache
def spellings(family: str) -> tuple[Spelling, ...]:
    """Every name the family's MoE (sub-)config accepts for the expert count and the top-k.

    A name counts when it is a spelling of NOTES §4 that the config class takes as a constructor
    parameter or stores, or an `attribute_map` alias of such a field.
    """
    config = base_config(family)
    path = moe_path(config) or ""
    sub = sub_config(config, path)
    cls = type(sub)
    params = set(inspect.signature(cls.__init__).parameters)
    stored = set(sub.to_dict())
    aliases: dict[str, str] = dict(getattr(cls, "attribute_map", {}) or {})
    found: list[Spelling] = []
    for quantity, table in QUANTITIES.items():
        fields = [n for n in table if n in params or n in stored]
        found += [Spelling(quantity, n, path, alias=n in aliases) for n in fields]
        found += [Spelling(quantity, a, path, alias=True) for a, t in aliases.items()
                  if a not in fields and (t in fields or (a in table and t in params | stored))]
    return tuple(found)


def _all_names(family: str, quantity: str) -> set[str]:
    return {s.name for s in spellings(family) if s.quantity == quantity} | set(QUANTITIES[quantity])


def _unset_tree(family: str, quantities: set[str]) -> tuple[Any, dict[str, Any], str]:
    """(config class, serialised tiny config with every spelling of `quantities` removed, MoE path)."""
    cls, tree, path = config_tree(family)
    node = _node(tree, path)
    for quantity in quantities:
        for name in _all_names(family, quantity):
            node.pop(name, None)
    return cls, tree, path


def config_json(family: str, settings: Settings) -> dict[str, Any]:
    """The family's tiny config as its config.json holds it (as this transformers writes it), with each value of
    `settings` set through its spelling, and only through it."""
    _, tree, path = _unset_tree(family, {s.quantity for s, _ in settings})
    node = _node(tree, path)
    for spelling, value in settings:
        node[spelling.name] = value
    return tree


def with_every_spelling(family: str, tree: dict[str, Any]) -> dict[str, Any]:
    """`tree` (a config.json of the family) with every name its config accepts for the expert count and the top-k set
    to the value the family's tiny config holds: whichever name a reader looks for, it finds the right value."""
    out = copy.deepcopy(tree)
    config = base_config(family)
    for quantity in QUANTITIES:
        keyword = _keyword(family, quantity)
        value = getattr(sub_config(config, keyword.path), keyword.name)
        for spelling in (s for s in spellings(family) if s.quantity == quantity):
            _node(out, spelling.path)[spelling.name] = value
    return out


def rejected_values(family: str, settings: Settings) -> str | None:
    """Why the family's own config class rejects these values through its own keywords (whatever the spelling), or
    None when it accepts them."""
    canonical = tuple((_keyword(family, s.quantity), v) for s, v in settings)
    try:
        build_config(family, "constructor", canonical)
    except Exception as exc:  # noqa: BLE001 - the values, not the spelling, are what the family rejects
        return (f"{family} rejects {dict((str(s), v) for s, v in settings)} through its own keywords too: "
                f"{type(exc).__name__}: {str(exc).splitlines()[-1][:200]}")
    return None


def build_config(family: str, form: str, settings: Settings) -> Any:
    """The family's tiny config with each value set through its spelling, and only through it.

    `constructor`: the config class called on the serialised tree; `config.json`: the tree written to a
    directory and read back by `AutoConfig.from_pretrained` (local files only); `setattr`: assigned on
    the built (sub-)config, top-k first (so no validator sees a top-k above the expert count).
    """
    from transformers import AutoConfig

    cls, tree, _ = _unset_tree(family, {s.quantity for s, _ in settings})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if form == "setattr":
            config = from_tree(cls, tree)
            for spelling, value in sorted(settings, key=lambda sv: sv[0].quantity != "top_k"):
                setattr(sub_config(config, spelling.path), spelling.name, value)
            return config
        tree = config_json(family, settings)
        if form == "constructor":
            return from_tree(cls, tree)
        if form == "config.json":
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "config.json").write_text(json.dumps(tree))
                return AutoConfig.from_pretrained(tmp, local_files_only=True, trust_remote_code=False)
    raise ValueError(f"unknown form {form!r}; known: {', '.join(FORMS)}")


def build_model(config: Any, seed: int = 0) -> nn.Module:
    """The model of `config` (causal LM, else base model), eval mode, every MoE block's tensors seeded."""
    torch.manual_seed(seed)
    model = build_sized(config)
    for block in moe_blocks(model).values():
        init_block(block, seed)
    return model


def moe_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """Every MoE block of the model (the parent of an experts module holding 3-D expert tensors), by name."""
    blocks = {}
    for name, module in model.named_modules():
        if name.endswith("experts") and _expert_tensors(module):
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            blocks[parent] = model.get_submodule(parent)
    return blocks


def _expert_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in module.named_parameters(recurse=False) if p.dim() == 3]


def _router(block: nn.Module) -> nn.Module | None:
    for name in ROUTER_NAMES:
        child = getattr(block, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


def hidden_size_of(config: Any, path: str) -> int:
    sub = sub_config(config, path)
    return int(getattr(sub, "hidden_size", None) or config.hidden_size)


def _routing_tensor(inputs: tuple[Any, ...], router_out: Any, experts: int) -> tuple[str, torch.Tensor] | None:
    """("ids", the [T, K] expert ids the experts module received), else ("dense", a [T, E] routing-score matrix
    the router returned), else None."""
    ints = [t for t in inputs if isinstance(t, torch.Tensor) and not t.is_floating_point() and t.dim() == 2]
    if ints:
        return "ids", ints[0]
    outs = router_out if isinstance(router_out, tuple) else (router_out,)
    dense = [t for t in outs if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() == 2
             and t.shape[-1] == experts]
    return ("dense", dense[0]) if dense else None


def _selected_per_token(inputs: tuple[Any, ...], router_out: Any, experts: int) -> list[int] | None:
    """How many expert slots each token fills: the in-range ids among the [T, K] ids the experts receive,
    else the nonzero entries of a dense [T, E] routing-score matrix the router returns. Slots, not distinct
    experts or nonzero weights: a hash router with an untrained table may fill two slots with one expert,
    and a skip slot (zaya) carries a zero weight by design."""
    found = _routing_tensor(inputs, router_out, experts)
    if found is None:
        return None
    kind, t = found
    counts = ((t >= 0) & (t < experts)).sum(-1) if kind == "ids" else (t != 0).sum(-1)
    return [int(n) for n in counts.tolist()]


def _keep(captured: dict[str, dict[str, Any]], block: str, what: str) -> Any:
    """A hook storing the first call's outputs (router) or inputs (experts) of one block; returns None."""

    def hook(module: nn.Module, args: tuple[Any, ...], *rest: Any) -> None:
        if what == "router":
            captured.setdefault(block, {}).setdefault(what, rest[0])
        else:
            captured.setdefault(block, {}).setdefault(what, (*args, *rest[0].values()))

    return hook


def measure(model: nn.Module, vocab_size: int, hidden_size: int | None = None, seed: int = 0,
            blocks_alone: bool = False) -> Observations:
    """What the model uses, per MoE block: its expert tensors' leading dim, and how many experts each of
    PROBE_TOKENS tokens is sent to in a forward pass of the whole model; with `blocks_alone` (for a family
    whose own tiny model fails outside its MoE blocks, see `full_forward_runs`), of each MoE block alone."""
    seen: Observations = {"num_experts": [], "top_k": []}
    for name, block in moe_blocks(model).items():
        for tensor_name, tensor in _expert_tensors(block.get_submodule("experts")):
            seen["num_experts"].append((f"{name}.experts.{tensor_name} leading dim", int(tensor.shape[0])))
    captured = capture_routing(model, vocab_size, hidden_size, seed, blocks_alone)
    seen["top_k"] = _picks_per_token(model, captured)
    return seen


def capture_routing(model: nn.Module, vocab_size: int, hidden_size: int | None = None, seed: int = 0,
                    blocks_alone: bool = False, tokens: int = PROBE_TOKENS) -> dict[str, dict[str, Any]]:
    """Per MoE block the forward of `tokens` random tokens reached (see `_probe`), in module order: its
    router's outputs ("router") and its experts module's inputs ("experts"), from the block's first call."""
    handles = []
    captured: dict[str, dict[str, Any]] = {}
    for name, block in moe_blocks(model).items():
        router = _router(block)
        if router is not None:
            handles.append(router.register_forward_hook(_keep(captured, name, "router")))
        handles.append(block.get_submodule("experts").register_forward_pre_hook(_keep(captured, name, "experts"),
                                                                                with_kwargs=True))
    try:
        _probe(model, vocab_size, hidden_size, seed, blocks_alone, tokens)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def routed_ids(inputs: tuple[Any, ...], router_out: Any, experts: int) -> torch.Tensor | None:
    """The [T, K] expert ids the experts module received, else the picks of a sparse [T, E] routing matrix the
    router returned (each token's nonzero columns, when every token has as many and fewer than E: a matrix
    nonzero everywhere holds scores, not picks), else None."""
    found = _routing_tensor(inputs, router_out, experts)
    if found is None or found[0] == "ids":
        return None if found is None else found[1]
    picked = found[1] != 0
    counts = picked.sum(-1)
    if not bool((counts == counts[0]).all()) or int(counts[0]) >= experts:
        return None
    return picked.nonzero()[:, 1].reshape(picked.shape[0], -1)


def _probe(model: nn.Module, vocab_size: int, hidden_size: int | None, seed: int, blocks_alone: bool,
           tokens: int = PROBE_TOKENS) -> None:
    """One forward of `tokens` random tokens through the whole model, or through each MoE block alone."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (1, tokens), generator=gen)
    with torch.no_grad():
        if not blocks_alone:
            model(input_ids=input_ids, use_cache=False)
            return
        for block in moe_blocks(model).values():
            hidden = int(_expert_tensors(block.get_submodule("experts"))[0][1].shape[-1])
            block(torch.randn(1, tokens, hidden_size or hidden, generator=gen))


def _picks_per_token(model: nn.Module, captured: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    """Per MoE block the forward reached: each distinct count of experts a token was sent to, with how many."""
    found = []
    for name, block in moe_blocks(model).items():
        got = captured.get(name, {})
        if not got:
            continue  # a block the forward never reached (a layer the model skips) uses nothing
        num = int(_expert_tensors(block.get_submodule("experts"))[0][1].shape[0])
        counts = _selected_per_token(got.get("experts", ()), got.get("router"), num)
        if counts is None:
            raise RuntimeError(f"{name}: neither expert ids nor a dense routing matrix seen; cannot count picks")
        for value in sorted(set(counts)):
            found.append((f"{name}: experts per token ({counts.count(value)} of {len(counts)} tokens)", value))
    return found


def vocab_size(config: Any, path: str) -> int:
    for cfg in (config, sub_config(config, path)):
        vocab = getattr(cfg, "vocab_size", None)
        if isinstance(vocab, int):
            return vocab
    return 2


@functools.lru_cache(maxsize=64)
def used(family: str, form: str, settings: Settings) -> Observations:
    """What the model built from the family's tiny config, with `settings` set in `form`, uses."""
    try:
        config = build_config(family, form, settings)
    except Exception as exc:
        rejected = rejected_values(family, settings)
        if rejected:
            raise ValuesRejected(rejected) from exc
        raise
    path = moe_path(config) or ""
    model = build_model(config)
    return measure(model, vocab_size(config, path), hidden_size_of(config, path), blocks_alone=not full_forward_runs(family))


@functools.cache
def full_forward_runs(family: str) -> bool:
    """Whether the family's own tiny model (no spelling set) runs a whole forward pass here. Where it does
    not (tiny attention shapes some families reject), spellings are measured on the MoE blocks alone;
    where it does, a forward that fails once a spelling is set is that spelling's finding."""
    config = base_config(family)
    path = moe_path(config) or ""
    try:
        measure(build_model(config), vocab_size(config, path), hidden_size_of(config, path))
    except Exception:  # noqa: BLE001 - any failure of the unchanged model: our shrink, not a finding
        return False
    return True


def _keyword(family: str, quantity: str) -> Spelling:
    """The family's first non-alias spelling of `quantity` (its own constructor keyword or stored key)."""
    names = [s for s in spellings(family) if s.quantity == quantity]
    return next((s for s in names if not s.alias), names[0])


def no_spelling_reason(family: str) -> str | None:
    """Why the family has no spelling to set (its config names no expert count or no top-k), or None."""
    missing = set(QUANTITIES) - {s.quantity for s in spellings(family)}
    return not_applicable(f"its config has no {' or '.join(sorted(missing))} spelling") if missing else None


@functools.cache
def skip_reason(family: str) -> str | None:
    """Why the family has no spelling to check here (no top-k field, no buildable model), or None."""
    if family in UNSUPPORTED_FAMILIES:
        return harness_limit(f"not a routed top-k MoE the harness models: {UNSUPPORTED_FAMILIES[family]}")
    reason = no_spelling_reason(family)
    if reason:
        return reason
    reason = unbuildable(lambda: build_model(base_config(family)))
    if reason:
        return reason
    model = build_model(base_config(family))
    if not moe_blocks(model):
        return harness_limit("its tiny model has no experts module with 3-D expert tensors (the only expert layout "
                             "this capability measures)")
    # Outside the try: the family's own tiny model failing to run is an error to see, not a skip.
    path = moe_path(base_config(family)) or ""
    measure(model, vocab_size(base_config(family), path), hidden_size_of(base_config(family), path),
            blocks_alone=not full_forward_runs(family))
    return None

"""transformers' `from_pretrained` as a checkpoint loader (the `checkpoint_loader` capability).

`load_with_transformers` loads a checkpoint directory into the family's real model (the class its tiny model is
built with; no network, no remote code, safetensors only) and returns its expert parameters under the reference
names, the non-expert tensors it loaded under their checkpoint keys, and transformers' own loading info as the
report. `resave` checks the way back: `save_pretrained`, reload.

`FAMILY_SCHEMAS` says which key schemas (NOTES §5) each family loads: the family record's where it has one, else
derived from the family's own tiny model (its fused experts' prefix and block, the base-model spelling of that
prefix, and the per-expert layout its conversion mapping reverts to), and why a family has none.
"""

from __future__ import annotations

import functools
import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.targets.base import CheckpointLoaderCap
from harness.targets.loaded import checkpoint_keys
from harness.targets.transformers.families import record
from harness.verdict import SkipReason, harness_limit, not_applicable
from reference.checkpoint import BLOCKS, PREFIXES, KeySchema, parse_expert_key
from reference.config import MoESpec
from reference.loader import LoadedCheckpoint, LoadReport, param_name

_EXPERT_PARAM = re.compile(r"layers\.(\d+)\.(?:\w+\.)?experts\.(gate_up_proj|down_proj)$")
_EXPERT_LIKE = re.compile(r"(^|\.)experts\.")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _Collect(logging.Handler):
    """Keeps warning records' messages, colour codes stripped."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(_ANSI.sub("", record.getMessage()))


@contextmanager
def _load_report() -> Iterator[_Collect]:
    """Collect transformers' warnings (its LOAD REPORT) instead of printing them, whatever the verbosity."""
    from transformers.utils import logging as hf_logging

    collect = _Collect()
    root = hf_logging.get_logger("transformers")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.disable_default_handler()
    root.addHandler(collect)
    try:
        yield collect
    finally:
        root.removeHandler(collect)
        hf_logging.enable_default_handler()
        hf_logging.set_verbosity(verbosity)


def _model_class(directory: Path) -> Any:
    """The class that builds the directory's config the way the family's tiny model is built (its causal LM,
    else its base model, else the modeling module's class declaring the config): `from_pretrained` on it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from harness.targets.transformers.tiny_model import model_builder

    config = AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    return getattr(model_builder(config), "__self__", AutoModelForCausalLM)


# A row of transformers' LOAD REPORT table (keys of several layers folded as `layers.{0, 1}.`).
_MISMATCH_ROW = re.compile(r"^(\S.*?)\s*\|\s*MISMATCH\b", re.MULTILINE)


def _from_pretrained(directory: Path, mismatched_ok: bool = False) -> tuple[Any, dict]:
    """from_pretrained with no network, no remote code, safetensors only. Its errors about conversions
    and mismatches say "look at the above report": the report is appended to them here. `mismatched_ok`:
    when it raised only because tensors that are not expert parameters have shapes other than the model's,
    load again with `ignore_mismatched_sizes` (they are reported, in `mismatched_keys`); a mismatched expert
    parameter, or any other error, still raises, as it does for a user."""
    try:
        return _attempt(directory, ignore_mismatched_sizes=False)
    except FromPretrainedError as exc:
        mismatched = _MISMATCH_ROW.findall(exc.report)
        if not (mismatched_ok and "ignore_mismatched_sizes" in str(exc.__cause__) and mismatched
                and not any(_EXPERT_LIKE.search(k) for k in mismatched)):
            raise
    return _attempt(directory, ignore_mismatched_sizes=True)


class FromPretrainedError(RuntimeError):
    """from_pretrained's error (its type named first) with the LOAD REPORT it refers to appended (`report`)."""

    def __init__(self, exc: Exception, report: str) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}\nThe report it refers to:\n{report}")
        self.report = report


def _attempt(directory: Path, ignore_mismatched_sizes: bool) -> tuple[Any, dict]:
    with _load_report() as report:
        try:
            return _model_class(directory).from_pretrained(  # type: ignore[no-any-return]
                directory, use_safetensors=True, local_files_only=True, trust_remote_code=False,
                output_loading_info=True, ignore_mismatched_sizes=ignore_mismatched_sizes)
        except Exception as exc:
            if not report.lines:
                raise
            raise FromPretrainedError(exc, "\n".join(report.lines)) from exc


def transposed_experts(model: torch.nn.Module, family: str) -> bool:
    """Whether the model holds its fused experts input-major ([E, H, 2I], [E, I, H]): its family record's layout,
    else the flag transformers' experts decorator sets on the module."""
    layout = record(family).layout
    if layout is not None:
        return layout[0]
    experts = next((m for n, m in model.named_modules()
                    if n.endswith("experts") and isinstance(getattr(m, "gate_up_proj", None), torch.Tensor)), None)
    return bool(getattr(experts, "is_transposed", False))


def expert_params(model: torch.nn.Module, transposed: bool = False) -> dict[str, torch.Tensor]:
    """The model's fused expert parameters under reference names (`model.layers.L.moe.experts.*`), in the
    reference's layout ([E, 2I, H], [E, H, I]: a `transposed` model's are transposed back)."""
    out = {}
    for name, tensor in model.state_dict().items():
        m = _EXPERT_PARAM.search(name)
        if m:
            out[param_name(int(m.group(1)), m.group(2))] = tensor.transpose(-1, -2) if transposed else tensor
    return out


def _mismatched(info: dict) -> list[str]:
    return [m[0] if isinstance(m, tuple) else m for m in info.get("mismatched_keys", ())]


def _report(info: dict) -> LoadReport:
    """Only expert slots are this capability's business: missing are the model's routed-expert parameters left
    unloaded (a mismatched one was not loaded either: it counts as missing, under the model's name for it), and
    unexpected the checkpoint's expert-like keys it did not take. The rest of the model (attention, norms, the
    shared expert, a norm inside the experts module) is whatever the checkpoint happens to hold."""
    return LoadReport(
        missing=sorted(n for n in [*info.get("missing_keys", ()), *_mismatched(info)] if _EXPERT_PARAM.search(n)),
        unexpected=sorted(n for n in info.get("unexpected_keys", ()) if _EXPERT_LIKE.search(n)))


def loaded_others(model: torch.nn.Module, info: dict, directory: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's non-expert tensors the model took as they are, under their checkpoint keys: each key
    that is one of the model's names (as spelled, or with the base-model prefix added or stripped) which the
    load neither left missing nor refused as mismatched. A key the conversion renames is not followed."""
    state = model.state_dict()
    dot = f"{model.base_model_prefix}." if getattr(model, "base_model_prefix", "") else ""
    skipped = {*info.get("missing_keys", ()), *_mismatched(info)}
    out = {}
    for key in checkpoint_keys(directory):
        if parse_expert_key(key) or _EXPERT_LIKE.search(key):
            continue
        names = [key] + ([dot + key, key.removeprefix(dot)] if dot else [])
        name = next((n for n in names if n in state), None)
        if name is not None and name not in skipped:
            out[key] = state[name]
    return out


def load_with_transformers(checkpoint_dir: Path, spec: MoESpec) -> LoadedCheckpoint:
    """`from_pretrained(checkpoint_dir)` on the family's model class; its expert parameters under reference
    names, the non-expert tensors it loaded under their checkpoint keys, and its loading info.

    `spec` is not needed: the model is built from the directory's own config.json. A non-expert tensor whose
    shape the family's model does not share (attention widths differ between families) is reported by
    transformers and left out, not raised on (see `_from_pretrained`): only the expert slots are judged.
    """
    model, info = _from_pretrained(checkpoint_dir, mismatched_ok=True)
    experts = expert_params(model, transposed_experts(model, model.config.model_type))
    return LoadedCheckpoint({**loaded_others(model, info, checkpoint_dir), **experts}, _report(info))


def resave(checkpoint_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state dict loaded from `checkpoint_dir`, state dict after `save_pretrained` and reloading it)."""
    first, _ = _from_pretrained(checkpoint_dir)
    with tempfile.TemporaryDirectory(prefix="moe-harness-resave-") as again:
        first.save_pretrained(again)
        second, _ = _from_pretrained(Path(again))
    return first.state_dict(), second.state_dict()


# ---- which key schemas a family loads ----------------------------------------------------------------

_OWN_FUSED = re.compile(r"^(?P<prefix>(?:\w+\.)*?)layers\.(?P<layer>\d+)\.(?:(?P<block>\w+)\.)?experts\."
                        r"(?P<param>gate_up_proj|down_proj)$")
_LEGACY_PER_EXPERT = re.compile(r"^(?P<prefix>(?:\w+\.)*?)layers\.\d+\.(?:(?P<block>\w+)\.)?experts\.\d+\."
                                r"(?P<proj>gate_proj|up_proj|down_proj|w1|w3|w2)\.weight$")


def _spellings(prefix: str, base_prefix: str) -> list[str]:
    """`prefix` and its base-model twin (transformers adds or strips `base_model_prefix` on load), in the grammar."""
    dot = f"{base_prefix}." if base_prefix else ""
    twins = [prefix] + ([prefix[len(dot):] if prefix.startswith(dot) else dot + prefix] if dot else [])
    return [p for p in PREFIXES if p in twins]


def _experts_root(family: str, model: Any) -> tuple[str, str, str, bool] | SkipReason:
    """(prefix, block, first layer, transposed) of the family's fused routed experts in its tiny model, or why the
    loader cannot map them."""
    state = model.state_dict()
    expert_names = [n for n in state if _EXPERT_LIKE.search(n)]
    if not expert_names:
        return not_applicable(f"its tiny model ({type(model).__name__}) has no routed-experts parameters")
    own = [m for m in map(_OWN_FUSED.match, expert_names) if m]
    if not any(m["param"] == "gate_up_proj" for m in own):
        kinds = sorted({re.sub(r"experts\.(?:expert_)?\d+\.", "experts.N.", re.sub(r"\.\d+\.", ".L.", n, count=1))
                        for n in expert_names})
        return harness_limit(f"its experts are stored as {', '.join(kinds[:4])}: no `layers.L.<block>.experts."
                             "gate_up_proj` [E, 2I, H] (ungated, per-expert modules, or not under `layers`), which the "
                             "key grammar and the reference's expert slots do not spell")
    roots = sorted({(m["prefix"], m["block"] or "") for m in own})
    if len(roots) > 1:
        return harness_limit(f"its experts sit in {len(roots)} stacks ({', '.join(p + 'layers.N.' + b for p, b in roots)}"
                             "); a generated checkpoint spells one")
    (prefix, block), = roots
    if prefix not in PREFIXES or block not in BLOCKS:
        return harness_limit(f"its experts sit at {prefix}layers.N.{block + '.' if block else ''}experts, outside the "
                             "key grammar (reference.checkpoint PREFIXES and BLOCKS)")
    layer = own[0]["layer"]
    experts = model.get_submodule(f"{prefix}layers.{layer}." + (f"{block}." if block else "") + "experts")
    transposed, concatenated = record(family).layout or (
        bool(getattr(experts, "is_transposed", False)), bool(getattr(experts, "is_concatenated", True)))
    if not concatenated:
        return harness_limit("its experts hold gate and up interleaved; the key grammar's fused gate_up_proj holds "
                             "them concatenated (gate rows first)")
    biases = sorted(n.rsplit(".", 1)[-1] for n, _ in experts.named_parameters() if n.endswith("_bias"))
    if biases:
        return harness_limit(f"its experts have biases ({', '.join(biases)}), which the key grammar does not spell")
    return prefix, block, layer, transposed


def _shapes_differ(model: Any, root: tuple[str, str, str, bool], spec: Any, when: str = "") -> SkipReason | None:
    """Why the tiny model's fused experts are not [E, 2I, H] and [E, H, I] (transposed: [E, H, 2I] and [E, I, H])
    for the reference's spec, or None."""
    prefix, block, layer, transposed = root
    path = f"{prefix}layers.{layer}." + (f"{block}." if block else "") + "experts."
    state = model.state_dict()
    e, h, i = spec.num_experts, spec.hidden_size, spec.intermediate_size
    shapes = {p: tuple(state[path + p].shape) for p in ("gate_up_proj", "down_proj") if path + p in state}
    want = {"gate_up_proj": (e, 2 * i, h), "down_proj": (e, h, i)}
    if transposed:
        want = {"gate_up_proj": (e, h, 2 * i), "down_proj": (e, i, h)}
    if shapes == want:
        return None
    return harness_limit(f"its experts hold {', '.join(f'{k} {list(v)}' for k, v in sorted(shapes.items()))}{when} "
                         f"where the reference spec (E={e}, H={h}, I={i}) says "
                         f"{', '.join(f'{k} {list(v)}' for k, v in sorted(want.items()))}")


def _dims_do_not_follow(family: str, root: tuple[str, str, str, bool]) -> SkipReason | None:
    """Why the family's experts do not take the plan's hidden size (they work in a width of their own behind
    projections, as muse_spark_text's `pre_expert_proj`), or None. Asked of a model built on the meta device
    from a plan's config with another hidden size; a family whose config keeps its hidden size is not asked."""
    from harness.families import tiny_spec
    from harness.strategies.checkpoint_files import CheckpointPlan, plan_config
    from harness.strategies.checkpoints import HIDDEN_STEP, family_limits
    from harness.targets.transformers.tiny_model import model_builder
    from reference.config import resolve_moe_spec

    limits = family_limits(family)
    if limits.hidden is not None:
        return None
    base = tiny_spec(family)
    config = plan_config(CheckpointPlan(family, KeySchema(), limits.first_moe_layer + 1, max(2, limits.min_experts),
                                        base.hidden_size + HIDDEN_STEP, limits.intermediate or base.intermediate_size))
    try:
        with torch.device("meta"):
            model = model_builder(config)(config)
    except Exception:  # noqa: BLE001 - a model that does not build is the case's to report, not this question's
        return None
    return _shapes_differ(model, root, resolve_moe_spec(config), " once the plan sets another hidden size")


def _legacy_schemas(family: str, base_prefix: str) -> list[KeySchema]:
    """The per-expert layouts the family's conversion mapping reverts its experts to (what it loads from)."""
    from harness.targets.transformers.conversion import family_conversion, missing_loading_api

    if missing_loading_api():
        return []
    found: dict[tuple[str, str, str], set[str]] = {}
    for name in family_conversion(family).legacy_names:
        m = _LEGACY_PER_EXPERT.match(name)
        if m:
            names = "w" if m["proj"].startswith("w") else "proj"
            found.setdefault((m["prefix"], m["block"] or "", names), set()).add(m["proj"])
    return [KeySchema(p, block, "per_expert", names) for (prefix, block, names), projs in sorted(found.items())
            if len(projs) == 3 and block in BLOCKS for p in _spellings(prefix, base_prefix)]


@functools.cache
def family_schemas(family: str) -> tuple[tuple[KeySchema, ...], SkipReason | None]:
    """The schemas `family`'s checkpoints load from, or () and why there are none."""
    from harness.families import tiny_spec
    from harness.targets.transformers.tiny_model import tiny_model, unbuildable

    # No model class: not applicable. A model transformers fails to build raises (ModelBuildFailed, the target's
    # failure, which fails the case), anything else is ours: neither is a skip.
    unbuilt = unbuildable(lambda: tiny_model(family))
    if unbuilt:
        return (), unbuilt
    model = tiny_model(family)
    root = _experts_root(family, model)
    if isinstance(root, SkipReason):
        return (), root
    try:
        spec = tiny_spec(family)
    except Exception as exc:  # noqa: BLE001 - our resolver; said as the reason
        return (), harness_limit(f"the reference cannot read its MoE config ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:160]})")
    differ = _shapes_differ(model, root, spec) or _dims_do_not_follow(family, root)
    if differ:
        return (), differ
    if record(family).checkpoint_schemas:
        return record(family).checkpoint_schemas, None
    prefix, block, _, transposed = root
    base_prefix = getattr(model, "base_model_prefix", "")
    fused = [KeySchema(p, block, "fused", "proj", transposed) for p in _spellings(prefix, base_prefix)]
    return tuple(dict.fromkeys([*fused, *_legacy_schemas(family, base_prefix)])), None


class FamilySchemas:
    """`schemas(family)` for the loader capability, with `skip_reason(family)` saying why a family has none."""

    def __call__(self, family: str) -> tuple[KeySchema, ...]:
        return family_schemas(family)[0]

    def skip_reason(self, family: str) -> SkipReason | None:
        return family_schemas(family)[1]


@dataclass(frozen=True)
class TransformersCheckpointLoader(CheckpointLoaderCap):
    """The capability, with `example_caps`: every example builds the family's model through from_pretrained
    (a tenth to a half of a second each), and the check runs on every discovered family, so dev and ci draw
    fewer (nightly keeps its own count)."""

    example_caps: tuple[tuple[str, int], ...] = (("dev", 8), ("ci", 10))


FAMILY_SCHEMAS = FamilySchemas()
CHECKPOINT_LOADER = TransformersCheckpointLoader(load_with_transformers, FAMILY_SCHEMAS)

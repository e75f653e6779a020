"""checkpoint-roundtrip: a loader fills every expert slot of a checkpoint on disk exactly once, exactly right,
and leaves the tensors beside the experts (router, shared expert, norms, attention) alone or in their own place.

It runs on every family the target serves (the transformers target: every discovered MoE family); a family the
loader claims no key schema for is skipped with the loader's reason (`schemas.skip_reason(family)`, where the
loader says one).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from typing import Any

from harness.checks.base import Check
from harness.families import Family
from harness.strategies.checkpoint_files import FORMATS, GeneratedCheckpoint, as_bits
from harness.strategies.checkpoints import checkpoints
from harness.targets.base import CheckpointLoaderCap
from harness.verdict import CheckSkipped, PropertyViolation, TargetError, not_applicable
from reference.checkpoint import parse_expert_key

_PARAM_OF_PROJ = {"gate_proj": ("gate_up_proj", 0), "w1": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
                  "w3": ("gate_up_proj", 1), "down_proj": ("down_proj", None), "w2": ("down_proj", None)}

SlotId = tuple[int, str, str, int | None, int | None]  # layer, param, suffix, expert, half (None: all)


def slot_of(name: str) -> SlotId | None:
    """The (layer, param, suffix, expert, half) an expert key or parameter name stands for, in any schema;
    a fused name stands for the whole parameter (expert and half None)."""
    parts = parse_expert_key(name)
    if parts is None:
        return None
    if "fused" in parts:
        return int(parts["layer"]), parts["fused"], parts.get("fsuffix", "weight"), None, None
    param, half = _PARAM_OF_PROJ[parts["proj"]]
    return int(parts["layer"]), param, parts["suffix"], int(parts["expert"]), half


def _covers(reported: str, name: str) -> bool:
    """`reported` names the slot of `name`, or the whole parameter holding it."""
    a, b = slot_of(reported), slot_of(name)
    return a is not None and b is not None and (a == b or (a[:3] == b[:3] and a[3] is None))


_LOOSE_EXPERT = re.compile(r"layers\.(\d+)\.(?:\w+\.)*?experts\.(\d+)\.")


def _layer_expert(name: str) -> tuple[int, int | None] | None:
    """(layer, expert) of a name in the grammar, or of any `layers.L. ... experts.E.` name (a loader may report a
    key renamed into a spelling outside the grammar: minimax_m3's `experts.1.gate_up_proj.weight`)."""
    slot = slot_of(name)
    if slot is not None:
        return slot[0], slot[3]
    m = _LOOSE_EXPERT.search(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _same_expert(name: str, key: str) -> bool:
    """`name` is the (layer, expert) of `key`, however the loader renamed it."""
    a = _layer_expert(name)
    return name == key or (a is not None and a == _layer_expert(key))


_CITED = re.compile(r"[\w.*]+(?:\{[\d, .]+\}[\w.*]*)*")
_BRACES = re.compile(r"\{([\d, .]+)\}")


def _indices(group: str) -> list[str]:
    """`0, 1` as its indices; `0...11` (a report's cut-short list) as every index from first to last."""
    if "..." in group:
        first, last = (int(n) for n in group.split("..."))
        return [str(i) for i in range(first, last + 1)]
    return [n.strip() for n in group.split(",")]


def _cited_names(text: str) -> list[str]:
    """The names an error text cites, a load report's compressed `layers.{0, 1}.x` (or `layers.{0...11}.x`)
    spelled out per index."""
    names: list[str] = []
    for token in _CITED.findall(text):
        parts = _BRACES.split(token)  # literal, indices, literal, ...
        choices = [[part] if i % 2 == 0 else _indices(part) for i, part in enumerate(parts)]
        names.extend("".join(choice) for choice in itertools.product(*choices))
    return names


def _offending(ckpt: GeneratedCheckpoint) -> list[str]:
    """Every name a clear rejection may cite: duplicated parameters and their keys, dropped and extra keys."""
    dup_keys = [key for key in ckpt.shard_of if any(_covers(p, key) or _covers(key, p) for p in ckpt.duplicated)]
    return [*ckpt.duplicated, *dup_keys, *ckpt.dropped, *ckpt.extra]


def check_loader(loader: CheckpointLoaderCap, family: Family, ckpt: GeneratedCheckpoint) -> None:
    """Load `ckpt` with the loader; the report names exactly what the plan broke, every other expected
    parameter is bit-exact, no key is loaded twice or into a parameter no slot expects, and each non-expert
    tensor the loader returns is exact under its own key (it may return none of them)."""
    try:
        result = loader.load(ckpt.directory, ckpt.spec)
    except CheckSkipped:
        raise
    except Exception as exc:
        _judge_rejection(ckpt, exc)
        return
    report = getattr(result, "report", None)
    if report is None:  # the adapter broke the capability's contract: its error, not a crash of the check
        raise TargetError(f"loader.load(directory, spec) returned {type(result).__name__}, which has no .report "
                          "(expected the LoadResult the capability documents)", TypeError("load"))
    _check_report(ckpt, report)
    twice = sorted(key for key, count in Counter(report.loaded).items() if count > 1)
    if twice:
        raise PropertyViolation("a checkpoint key was loaded more than once", keys=twice[:4])
    affected = {*ckpt.duplicated, *(name for name in ckpt.expected for key in ckpt.dropped if _covers(name, key))}
    for name, want in ckpt.expected.items():
        got = result.params.get(name)
        if name in affected and got is None:
            continue  # reported (checked above) and left out
        if got is None:
            raise PropertyViolation("an expected parameter was never written", parameter=name,
                                    loaded_expert_params=sorted(p for p in result.params if slot_of(p))[:6])
        if name in affected and any(_covers(m, name) or _covers(name, m) for m in report.missing):
            continue  # reported missing, so whatever it holds is not silently used
        _compare(ckpt, name, got, want)
    stray = sorted(p for p in result.params if slot_of(p) and p not in ckpt.expected)
    if stray:
        raise PropertyViolation("the loader produced expert parameters no slot of the checkpoint expects",
                                parameters=stray[:4], expected=sorted(ckpt.expected)[:4])
    _check_others(ckpt, result.params)


def _bits_key(tensor: Any) -> tuple[Any, ...]:
    return str(tensor.dtype), tuple(tensor.shape), as_bits(tensor.detach().cpu()).numpy().tobytes()


def _check_others(ckpt: GeneratedCheckpoint, params: dict[str, Any]) -> None:
    """A non-expert tensor the loader returns under its key holds exactly what was written (after the
    loader's dtype cast, if any); none is returned under another non-expert name."""
    for key, want in ckpt.others.items():
        got = params.get(key)
        if got is None:
            continue
        if tuple(got.shape) != tuple(want.shape):
            raise PropertyViolation("a non-expert tensor was loaded with another shape", key=key,
                                    got=f"{got.dtype} {list(got.shape)}", expected=f"{want.dtype} {list(want.shape)}")
        want_bits, got_bits = as_bits(want.to(got.dtype)), as_bits(got.detach().cpu())
        wrong = (got_bits != want_bits).nonzero()
        if len(wrong):
            index = tuple(int(i) for i in wrong[0])
            raise PropertyViolation("a non-expert tensor was loaded with other values", key=key, index=list(index),
                                    found=ckpt.locate(got.dtype, int(got_bits[index])) if got.dtype == want.dtype
                                    else f"{got.detach().cpu()[index]!r}", wrong_elements=f"{len(wrong)} of {want.numel()}")
    written = {_bits_key(t): k for k, t in ckpt.others.items()}
    moved = sorted((name, written[_bits_key(t)]) for name, t in params.items()
                   if name not in ckpt.others and not slot_of(name) and t.numel() > 1 and _bits_key(t) in written)
    if moved:
        raise PropertyViolation("a non-expert tensor was loaded under another name",
                                loaded_as=[name for name, _ in moved[:4]], key=[key for _, key in moved[:4]])


def _judge_rejection(ckpt: GeneratedCheckpoint, exc: Exception) -> None:
    """Raising is a correct answer to a duplicated, dropped or extra key, if the error names one (or the
    parameter it belongs to, in any schema's spelling)."""
    message = f"{type(exc).__name__}: {exc}"
    offending = _offending(ckpt)
    if not offending:
        raise TargetError(f"checkpoint_loader raised {message}", exc) from exc
    cited = _cited_names(str(exc))
    if not any(name == c or _covers(c, name) or _covers(name, c) for name in offending for c in cited):
        raise PropertyViolation("the loader rejected the checkpoint with an error that names none of the "
                                "duplicated, missing or extra keys", error=message[:400],
                                should_name=offending[:4]) from exc


def _check_report(ckpt: GeneratedCheckpoint, report: Any) -> None:
    """Conflicts, missing and unexpected name exactly what the plan duplicated, dropped and added; no
    non-expert key is among them (the router, a norm or the shared expert is no expert slot's business)."""
    conflicting = {key for keys in report.conflicts.values() for key in keys}
    taken = sorted(k for k in ckpt.others if k in report.unexpected or k in report.missing or k in conflicting)
    if taken:
        renamed = getattr(report, "renamed", {})
        raise PropertyViolation("the loader took a non-expert tensor for an expert key",
                                keys=[f"{k} (renamed {renamed[k]})" if k in renamed else k for k in taken[:4]],
                                reported_as=sorted({"unexpected" for k in taken if k in report.unexpected}
                                                   | {"missing" for k in taken if k in report.missing}
                                                   | {"conflicting" for k in taken if k in conflicting}))
    for key in ckpt.extra:
        if not any(_same_expert(u, key) for u in report.unexpected):
            raise PropertyViolation("a key no slot takes is not reported unexpected by name", extra=key,
                                    unexpected=sorted(report.unexpected)[:6])
    wrongly = sorted(u for u in report.unexpected if not any(_same_expert(u, key) for key in ckpt.extra))
    if wrongly:
        renamed = getattr(report, "renamed", {})
        raise PropertyViolation("the loader reports keys unexpected that belong to expected slots",
                                unexpected=[f"{u} (renamed {renamed[u]})" if u in renamed else u for u in wrongly[:6]],
                                written=sorted(ckpt.shard_of)[:6])
    # After the unexpected keys: a loader that does not recognise one spelling of a duplicated parameter
    # (seed 002 on the `.moe` copy) shows that, the more basic failure, rather than a missing conflict.
    unreported = [p for p in ckpt.duplicated if p not in report.conflicts]
    if unreported:
        raise PropertyViolation("a parameter written in two schemas was neither rejected nor reported as a "
                                "conflict", parameters=unreported[:4], conflicts=sorted(report.conflicts)[:4])
    spurious = sorted(set(report.conflicts) - set(ckpt.duplicated))
    if spurious:
        raise PropertyViolation("conflicts reported for parameters written once", parameters=spurious[:4],
                                keys=[report.conflicts[p] for p in spurious[:2]])
    for key in ckpt.dropped:
        if not any(_covers(m, key) for m in report.missing):
            raise PropertyViolation("a key missing from the checkpoint is not reported missing by name",
                                    dropped=key, missing=sorted(report.missing)[:6])
    held = sorted(m for m in report.missing if not any(_covers(m, key) for key in ckpt.dropped))
    if held:
        raise PropertyViolation("the loader reports keys missing that the checkpoint holds",
                                missing=held[:6], written=sorted(ckpt.shard_of)[:6])


def _compare(ckpt: GeneratedCheckpoint, name: str, got: Any, want: Any) -> None:
    if got.dtype != want.dtype or tuple(got.shape) != tuple(want.shape):
        raise PropertyViolation("a parameter has the wrong dtype or shape", parameter=name,
                                got=f"{got.dtype} {list(got.shape)}", expected=f"{want.dtype} {list(want.shape)}")
    got_bits, want_bits = as_bits(got.detach().cpu()), as_bits(want)
    wrong = (got_bits != want_bits).nonzero()
    if len(wrong):
        index = tuple(int(i) for i in wrong[0])
        raise PropertyViolation(
            "a slot holds the wrong tensor", parameter=name, index=list(index),
            expected=ckpt.locate(want.dtype, int(want_bits[index])),
            found=ckpt.locate(got.dtype, int(got_bits[index])),
            wrong_elements=f"{len(wrong)} of {want.numel()}")


def describe(ckpt: GeneratedCheckpoint) -> dict[str, Any]:
    """The plan, its first keys, and the call that writes the same checkpoint again."""
    out = ckpt.plan.describe()
    spec, plan = ckpt.spec, ckpt.plan
    for field, wrote, asked in (("experts", spec.num_experts, plan.num_experts),
                                ("hidden", spec.hidden_size, plan.hidden),
                                ("intermediate", spec.intermediate_size, plan.intermediate)):
        if wrote != asked:  # the family's config kept its own value: the checkpoint holds that one
            out[field] = f"{wrote} (the config's own; the plan asked {asked})"
    out["first_keys"] = list(ckpt.shard_of)[:3]
    out["rebuild"] = f"write_checkpoint({ckpt.plan!r})"
    return out


def _excludes(loader: CheckpointLoaderCap, family: Family, target_name: str) -> str | None:
    """The loader's own reason for a family it has no schema for (`schemas.skip_reason`, where it gives one),
    else that it claims none."""
    why = getattr(loader.schemas, "skip_reason", None)
    reason = why(family.name) if why else None
    if reason:
        return reason  # type: ignore[no-any-return]
    if not loader.schemas(family.name):
        return not_applicable(f"{target_name}'s checkpoint loader claims no key schema for {family.name}")
    return None


CHECKPOINT_ROUNDTRIP: Check[CheckpointLoaderCap] = Check(
    name="checkpoint-roundtrip",
    capability="checkpoint_loader",
    summary="every expert slot written once with exactly its tensor; missing, unexpected and two-layout keys "
            "reported by name or rejected",
    draws=lambda loader, family: checkpoints(family.name, loader.schemas(family.name),
                                             formats=loader.formats or tuple(FORMATS)),
    holds=check_loader,
    describe=describe,
    excludes=_excludes,
)

"""config-accepted: a config the family's config class accepts builds a model that runs; a value it does not
support is refused by the config class itself, at construction, with a message.

One to three of the MoE fields the config class declares are set to other values (drawn from the class's own
field types, choices and the tiny config's values: `harness.strategies.config_variants`). The target
constructs the config, builds the tiny model and runs a forward on a few tokens. The property holds when the
constructor raises an error that says something, or when the model builds and its forward returns finite
values; a crash at model build or forward after the class accepted the values, a non-finite output or a
refusal without a message is a finding naming the fields, their values and the stage.
"""

from __future__ import annotations

import torch

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.config_variants import VariantExample, drawable, variant_examples
from harness.targets.base import ConfigField, ConfigRejected, ConfigVariantsCap, VariantFailed
from harness.verdict import PropertyViolation, SkipReason, not_applicable


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else ""


def check_config_accepted(cap: ConfigVariantsCap, family: Family, example: VariantExample) -> None:
    """Holds when the config class refuses the example with a message, or the model built from it runs to a
    finite output. Anything `build_and_run` raises besides ConfigRejected / VariantFailed is the adapter
    breaking its contract: a target error naming where it raised."""
    settings = example.text()
    try:
        out = call_target(f"build_and_run({family.name!r}, {settings})", cap.build_and_run, family.name,
                          example.settings(), passes=(ConfigRejected, VariantFailed))
    except ConfigRejected as rejected:
        if not _first_line(rejected.error):
            raise PropertyViolation(
                f"{family.name}'s config class refuses {settings} with {type(rejected.error).__name__} and no "
                f"message", stage="construction", error=type(rejected.error).__name__) from rejected
        return  # refused at construction, with a message: the property holds
    except VariantFailed as failed:
        error = f"{type(failed.error).__name__}: {_first_line(failed.error)}"
        raise PropertyViolation(
            f"{family.name}'s config class accepts {settings}, but the {failed.stage} raises {error}",
            stage=failed.stage, error=error) from failed
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise PropertyViolation(f"{family.name} with {settings}: the forward returned {type(out).__name__}, "
                                f"not a float tensor", stage="forward")
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        raise PropertyViolation(f"{family.name}'s config class accepts {settings}, but the forward's output has "
                                f"{bad} non-finite values of {out.numel()}", stage="forward",
                                error=f"{bad} non-finite values")


def _fields(cap: ConfigVariantsCap, family: Family) -> tuple[ConfigField, ...]:
    return call_target(f"fields({family.name!r})", cap.fields, family.name, returns=tuple)  # type: ignore[no-any-return]


def _excludes(cap: ConfigVariantsCap, family: Family, target_name: str) -> SkipReason | None:
    if not drawable(_fields(cap, family)):
        return not_applicable("its MoE config declares no field with a value other than its default to draw")
    return None


CONFIG_ACCEPTED: Check[ConfigVariantsCap] = Check(
    name="config-accepted",
    capability="config_variants",
    summary="a config its class accepts (MoE fields drawn from the class) builds and runs with finite output",
    draws=lambda cap, family: variant_examples(_fields(cap, family)),
    holds=check_config_accepted,
    describe=lambda example: example.describe(),
    excludes=_excludes,
    example_caps=(("dev", 5), ("ci", 8)),
    needs_spec=False,
)

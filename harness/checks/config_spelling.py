"""config-spelling: a value set through any spelling the family's config accepts is the value its model uses.

An expert count and a top-k are drawn, each set through one accepted name (constructor keyword, stored
config.json key or attribute_map alias, at the family's nesting); every form the target offers
(constructor call, config.json read by the library, assignment on the built config) is built from them,
and the target reports what each built model uses. Every measurement must equal the value set.
"""

from __future__ import annotations

import hypothesis

from harness.checks.base import Check, call_target
from harness.families import Family
from harness.strategies.spellings import SpellingExample, by_quantity, spelling_examples
from harness.targets.base import ConfigSpellingCap, Spelling, ValuesRejected
from harness.verdict import CheckSkipped, PropertyViolation, TargetError, not_applicable


def check_config_spelling(cap: ConfigSpellingCap, family: Family, example: SpellingExample) -> None:
    for form in cap.forms:
        try:
            seen = cap.used(family.name, form, example.settings())
        except ValuesRejected:
            hypothesis.reject()  # the family's own keyword rejects these values too: no spelling to judge
        except CheckSkipped:
            raise  # the target says the family is not applicable (its own reason)
        except Exception as exc:
            raise TargetError(f"building {family.name} ({form}) with {example.describe()} raised "
                              f"{type(exc).__name__}: {exc}", exc) from exc
        _assert_used(form, example, seen)


def _assert_used(form: str, example: SpellingExample, seen: dict[str, list[tuple[str, int]]]) -> None:
    for spelling, value in example.settings():
        observed = seen.get(spelling.quantity, [])
        if not observed:
            raise PropertyViolation(f"{spelling.quantity}={value} set through {spelling} ({form}): the built "
                                    f"model has no MoE block that uses a {spelling.quantity}", form=form,
                                    spelling=str(spelling))
        wrong = [(where, got) for where, got in observed if got != value]
        if wrong:
            where, got = wrong[0]
            raise PropertyViolation(
                f"{spelling.quantity}={value} set through {spelling} ({form}), but the built model uses "
                f"{got} ({where}; {len(wrong)} of {len(observed)} measurements differ)",
                form=form, spelling=str(spelling), set=value, used=got, where=where)


def _spellings(cap: ConfigSpellingCap, family: Family) -> tuple[Spelling, ...]:
    return call_target(f"spellings({family.name!r})", cap.spellings, family.name, returns=tuple)  # type: ignore[no-any-return]


def _excludes(cap: ConfigSpellingCap, family: Family, target_name: str) -> str | None:
    missing = [q for q, names in by_quantity(_spellings(cap, family)).items() if not names]
    return not_applicable(f"its config accepts no {' or '.join(missing)} spelling") if missing else None


CONFIG_SPELLING: Check[ConfigSpellingCap] = Check(
    name="config-spelling",
    capability="config_spelling",
    summary="an expert count / top-k set through any accepted spelling, nesting and form is what the model uses",
    draws=lambda cap, family: spelling_examples(by_quantity(_spellings(cap, family))),
    holds=check_config_spelling,
    describe=lambda example: example.describe(),
    excludes=_excludes,
    example_caps=(("dev", 5), ("ci", 5)),
    needs_spec=False,
)

"""Detection benchmark (a script, not a test): examples and seconds until each seed bug is first found.

    .venv/bin/python -m bench.detection [--seeds 20]

For each seed bug, over N Hypothesis seeds, generation only (no shrinking), dev-profile settings with a
200-example budget: the median number of examples and seconds to the first counterexample.
"""

from __future__ import annotations

import argparse
import statistics
import time

import hypothesis
from hypothesis import Phase, given, settings

from harness.checks import CHECKS
from harness.engine import quiet_libraries
from harness.families import Family, get_family
from harness.findings import all_findings
from harness.profiles import profile_settings
from harness.targets import load_target
from harness.targets.base import Target


def first_failure(check_name: str, target: str | Target, family_name: str, seed: int,
                  examples: int = 200) -> tuple[int | None, float]:
    """(examples until the first counterexample, or None if none in `examples`; seconds) at Hypothesis `seed`."""
    check = CHECKS[check_name]
    target = load_target(target) if isinstance(target, str) else target
    family = Family("any") if family_name == "any" else get_family(family_name)
    count = 0

    def body(example: object) -> None:
        nonlocal count
        count += 1
        check.prop(target, family, example)

    test = given(check.strategy(target, family))(body)
    test = settings(profile_settings("dev"), max_examples=examples, phases=[Phase.generate])(test)
    start = time.perf_counter()
    try:
        hypothesis.seed(seed)(test)()
    except Exception:
        return count, time.perf_counter() - start
    return None, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    quiet_libraries()
    print("| seed bug | target | check | family | found | median examples | median seconds |")
    print("|---|---|---|---|---|---|---|")
    for bug in (f for f in all_findings() if f.expected):  # the seed bugs, from the seed targets' findings files
        target, check, family, what = bug.target, bug.check, bug.family, bug.reason
        runs = [first_failure(check, target, family, s) for s in range(args.seeds)]
        found = [r for r in runs if r[0] is not None]
        med_n = statistics.median(r[0] for r in found) if found else float("nan")
        med_s = statistics.median(r[1] for r in found) if found else float("nan")
        print(f"| {what.split(':')[0]} | {target} | {check} | {family} | {len(found)}/{len(runs)} | "
              f"{med_n:g} | {med_s:.3f} |", flush=True)


if __name__ == "__main__":
    main()

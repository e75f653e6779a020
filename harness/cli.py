"""`moe-harness`: run the checks over targets and print each failure as a bug report.

Exit codes: 0 every case passed (or failed as a known failure), 1 a property was violated,
2 usage or harness error.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from harness.checks import CHECKS
from harness.engine import DEFAULT_SEED, quiet_libraries, run_case
from harness.profiles import PROFILES
from harness.report import render_failure, render_summary
from harness.selection import UsageError, select_cases
from harness.targets import BUILTIN, load_target
from harness.verdict import ERROR, FAIL, Verdict

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe-harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run checks over targets and families")
    run.add_argument("--target", action="append", help=f"target name (repeatable); one of {', '.join(BUILTIN)}")
    run.add_argument("--check", action="append", help=f"check name (repeatable); one of {', '.join(CHECKS)}")
    run.add_argument("--family", action="append", help="family (model_type) to run (repeatable)")
    run.add_argument("--profile", default="dev", choices=sorted(PROFILES), help="Hypothesis profile")
    run.add_argument("--max-examples", type=int, help="override the profile's example count")
    run.add_argument("--seed", type=int, default=DEFAULT_SEED, help="Hypothesis seed (reproducers pin it)")
    run.add_argument("--quiet", action="store_true", help="no per-case progress lines")
    sub.add_parser("targets", help="list targets and their capabilities")
    return parser


def _run(args: argparse.Namespace) -> int:
    cases = list(select_cases(args.target, args.check, args.family))
    verdicts: list[Verdict] = []
    for i, case in enumerate(cases, 1):
        verdict = run_case(case.check, case.target, case.family, profile=args.profile,
                           max_examples=args.max_examples, seed=args.seed)
        verdicts.append(verdict)
        if not args.quiet:
            failed = sum(v.status in (FAIL, ERROR) for v in verdicts)
            print(f"[{i}/{len(cases)}] {verdict.status.upper():5} {verdict.case_id} "
                  f"({verdict.examples} examples, {verdict.seconds:.2f}s; failures so far: {failed})", flush=True)
    print()
    print(render_summary(verdicts))
    for verdict in verdicts:
        if verdict.status in (FAIL, ERROR):
            print()
            print(render_failure(verdict))
    statuses = Counter(v.status for v in verdicts)
    if statuses[ERROR]:
        return EXIT_USAGE
    return EXIT_VIOLATION if statuses[FAIL] else EXIT_OK


def _targets() -> int:
    for name in BUILTIN:
        target = load_target(name)
        print(f"{name:18} {target.version:18} {', '.join(target.capabilities())}")
        print(f"{'':18} {target.description}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `moe-harness` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    quiet_libraries()
    try:
        if args.command == "targets":
            return _targets()
        return _run(args)
    except UsageError as exc:
        print(f"moe-harness: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

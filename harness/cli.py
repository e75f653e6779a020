"""`moe-harness`: run the checks over targets, list targets, checks and families, inspect a checkpoint
directory, replay stored failures, re-render reports.

Commands:
  run       checks × targets × families; progress, a matrix, then one bug report per bug
  targets   every target with its version and capabilities (--json for machines)
  checks    every check: its capability, its families, its property
  families  the families a run covers; for a target, whether each check runs on each and why not
  inspect   a checkpoint directory against its family's config: missing, unexpected, conflicting, mis-shaped
  replay    re-run every stored failing case: FIXED / FAILED / ERROR (--prune removes the fixed ones)
  env       the environments targets run in: `env list` (state, size, path), `env build NAME` (idempotent)
  report    re-render a saved report directory

Exit codes: 0 every case passed (or failed as a known failure) / every replayed case is fixed / the checkpoint
is clean; 1 a property was violated / a replayed case still fails / the checkpoint has problems; 2 usage or
harness error; 130 interrupted (`run` reports what finished).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

# Only what every command needs is imported here: a command imports torch and the libraries under test when it
# runs something (run, targets, families, inspect, replay), so --help, `report` and `env` answer at once.
from harness.database import LOCAL_DIR, SHARED_DIR, RegressionStore
from harness.exit_codes import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, EXIT_VIOLATION, UsageError
from harness.outcome import CaseResult
from harness.profiles import DEFAULT_PROFILE, PROFILES, PROMOTING_PROFILE
from harness.reports import junit, markdown, text
from harness.reports.directory import load_report, write_report_dir
from harness.reports.document import Report, RunInfo, TargetInfo, targets_json
from harness.targets import DEFAULT_TARGETS, registered_targets
from harness.verdict import Status
from harness.versions import library_versions

if TYPE_CHECKING:
    from harness.environments.declaration import Environment
    from harness.replay import Replayed
    from harness.runner import RunOptions
    from harness.selection import Plan

# Workers by default: one per core up to 4 (each imports torch and the target's library once).
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=LOCAL_DIR, metavar="DIR",
                        help=f"local example database and records (default: {LOCAL_DIR})")
    parser.add_argument("--regressions", type=Path, default=SHARED_DIR, metavar="DIR",
                        help="shared regression directory, read-only unless promoting (default: cases/regressions)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moe-harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run checks over targets and families")
    run.add_argument("--target", action="append", metavar="NAME|MODULE:OBJECT",
                     help=f"target (repeatable): a name from `moe-harness targets` or package.module:object "
                          f"(default: {' '.join(DEFAULT_TARGETS)})")
    run.add_argument("--check", action="append", help="check name (repeatable); `moe-harness checks` lists them")
    run.add_argument("--family", action="append", help="family (model_type) to run (repeatable)")
    run.add_argument("--profile", default=DEFAULT_PROFILE, choices=list(PROFILES), help="Hypothesis profile")
    run.add_argument("--max-examples", type=_at_least(1), help="override the profile's example count")
    run.add_argument("--seed", type=int,
                     help="Hypothesis seed (default: a new one each run, printed with the summary; reproducers pin it)")
    run.add_argument("--workers", type=_at_least(0), default=DEFAULT_WORKERS, metavar="N",
                     help=f"run cases in N worker processes, so a native crash costs only its case (default: "
                          f"{DEFAULT_WORKERS}, the cores here up to 4); 0: in this process, for a debugger")
    run.add_argument("--report-dir", type=Path, metavar="DIR", help="write report.json, report.md, junit.xml")
    run.add_argument("--case-timeout", type=float, metavar="SECONDS",
                     help="stop a case running longer and report it as the target's error (default: the profile's)")
    run.add_argument("--families", action="store_true", help="also show which families landed in each cell")
    run.add_argument("--quiet", action="store_true", help="no per-case progress lines")
    run.add_argument("--no-build", action="store_true",
                     help="do not build a target's missing environment: report its cases skipped, with the command")
    run.add_argument("--here", action="store_true",
                     help="run every target in this process's environment, even one that declares its own")
    run.add_argument("--stream", type=int, metavar="FD", help=argparse.SUPPRESS)  # the harness's own protocol
    run.add_argument("--main-job", action="store_true", help=argparse.SUPPRESS)  # started by a bare `run`
    run.add_argument("--promote", action=argparse.BooleanOptionalAction, default=None,
                     help=f"write new failures into the shared regression directory "
                          f"(default: only with --profile {PROMOTING_PROFILE})")
    _add_store_options(run)
    targets = sub.add_parser("targets", help="list targets with their versions and capabilities")
    targets.add_argument("specs", nargs="*", metavar="NAME|MODULE:OBJECT", help="only these (default: all registered)")
    targets.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("checks", help="list the checks: the capability each asks for, its families, its property")
    fams = sub.add_parser("families", help="list the families a run covers, with their routing; for a target, "
                                           "which checks run on each and why not")
    fams.add_argument("--target", metavar="NAME|MODULE:OBJECT", help="only the families this target's cases run over")
    fams.add_argument("--check", action="append", metavar="C",
                      help="with --target: whether this check runs on each family, or its skip reason (repeatable; "
                           "default: every check the target offers)")
    insp = sub.add_parser("inspect", help="check a safetensors checkpoint directory against its family's config")
    insp.add_argument("directory", type=Path, metavar="CHECKPOINT_DIR",
                      help="a directory holding config.json and model.safetensors (or shards and their index)")
    insp.add_argument("--family", metavar="F", help="the family (model_type) to check it as "
                      "(default: config.json's model_type)")
    rep = sub.add_parser("replay", help="re-run every stored failing case: FIXED / FAILED / ERROR")
    rep.add_argument("cases", nargs="*", metavar="CASE", help="only these case ids, e.g. 'remap-idempotence[t-gemma4]'")
    rep.add_argument("--prune", action="store_true", help="remove the records and examples of fixed cases")
    rep.add_argument("--here", action="store_true",
                     help="replay every case in this process's environment, even one whose target declares its own")
    _add_store_options(rep)
    env = sub.add_parser("env", help="the environments targets run in: list them, build them")
    env_sub = env.add_subparsers(dest="env_command", required=True)
    env_sub.add_parser("list", help="every declared environment: its state, size and path")
    env_build = env_sub.add_parser("build", help="build (or reuse) environments; idempotent")
    env_build.add_argument("names", nargs="+", metavar="NAME", help="an environment (its target's name or spec)")
    env_build.add_argument("--force", action="store_true", help="rebuild even when the built one is up to date")
    env_python = env_sub.add_parser("python", help="run the environment's Python (built first if needed) with the "
                                                   "harness on its path, as a target's run there does: its exit code")
    env_python.add_argument("names", nargs=1, metavar="NAME", help="an environment (its target's name or spec)")
    env_python.add_argument("arguments", nargs=argparse.REMAINDER, metavar="ARG",
                            help="what follows goes to Python, e.g. -m pytest tests/test_torchtitan_target.py")
    show = sub.add_parser("report", help="re-render a report directory written by `run --report-dir`")
    show.add_argument("directory", type=Path)
    show.add_argument("--format", choices=("text", "markdown", "junit", "json"), default="text")
    show.add_argument("--families", action="store_true", help="also show which families landed in each cell")
    return parser


def _run(args: argparse.Namespace, command: str) -> int:
    from harness.environments import targets as env_targets
    from harness.runner import RunOptions, run_cases, unavailable_results
    from harness.selection import plan

    if args.seed is None:  # every run explores new inputs; the summary prints the seed that replays them
        args.seed = secrets.randbelow(2**32)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.perf_counter()
    specs = list(dict.fromkeys(args.target or DEFAULT_TARGETS))
    away = env_targets.elsewhere(specs, args.here)
    # The bare main job (no target or check named, here or in the run that started this one) keeps to each target's
    # own families.
    broad = bool(args.target and not getattr(args, "main_job", False) or args.check)
    selection = plan([s for s in specs if s not in away], args.check, args.family, broad, args.stream is not None)
    selection.missing = [env_targets.blame_environment(m) for m in selection.missing]
    promote = args.promote if args.promote is not None else args.profile == PROMOTING_PROFILE
    options = RunOptions(args.profile, args.max_examples, args.seed,
                         RegressionStore(args.db, args.regressions, promote_new=promote), args.case_timeout)
    if args.stream is not None:
        return _stream(args, selection, options)
    results = unavailable_results(selection.missing, selection.checks)
    targets = [TargetInfo.of(spec, target) for spec, target in selection.targets]
    targets += [TargetInfo.unloaded(m.spec, m.reason, m.error) for m in selection.missing]
    progress = text.Progress(len(selection.cases), quiet=args.quiet)
    versions = library_versions()
    ran: dict[int, CaseResult] = {}
    elsewhere: list[CaseResult] = []
    not_offered: list[tuple[str, str]] = []
    interrupted = False
    try:
        for index, result in run_cases(selection.cases, options, args.workers):
            ran[index] = result
            progress.show(result)
        for spec, env in away.items():
            _run_elsewhere(args, spec, env, selection.checks, progress, (elsewhere, targets, versions, not_offered))
    except KeyboardInterrupt:  # report what finished; the cases still running are abandoned
        interrupted = True
        print(f"\nmoe-harness: interrupted; reporting the {progress.done} of {progress.total} cases that finished",
              file=sys.stderr)
    results += [ran[i] for i in sorted(ran)] + elsewhere
    report = Report(RunInfo(command, args.profile, args.seed, args.max_examples, args.workers, started,
                            round(time.perf_counter() - clock, 3), versions, interrupted,
                            progress.total + len(selection.missing) * len(selection.checks),
                            selection.not_offered + not_offered), targets, results)
    print()
    print(text.render_report(report, families=args.families, replay_options=_store_options(args)))
    unsaved = [r for r in results if "record_not_saved" in r.stats]
    if unsaved:
        print(f"moe-harness: {len(unsaved)} failure record(s) not saved under {args.db}: "
              f"{unsaved[0].stats['record_not_saved']} (the failures above stand; pass a writable --db)",
              file=sys.stderr)
    if args.report_dir:
        try:
            print(text.render_written(write_report_dir(report, args.report_dir)))
        except OSError as exc:
            print(f"moe-harness: could not write the report directory {args.report_dir}: {type(exc).__name__}: "
                  f"{exc} (the results above stand; pass a writable --report-dir)", file=sys.stderr)
            return max(_exit_code(report), EXIT_USAGE)
    return EXIT_INTERRUPTED if interrupted else _exit_code(report)


def _run_elsewhere(args: argparse.Namespace, spec: str, env: Environment, checks: list[str], progress: text.Progress,
                   into: tuple[list[CaseResult], list[TargetInfo], dict[str, str], list[tuple[str, str]]]) -> None:
    """`spec`'s cases, run in its own environment `env` (built first when it has to be): its results, its
    target and the versions there go `into` this run's, as they arrive."""
    from harness.environments import targets as env_targets
    from harness.environments.launch import Remote
    from harness.runner import unavailable_results

    results, targets, versions, not_offered = into
    missing = env_targets.prepare(spec, env, not args.no_build, lambda line: print(f"moe-harness: {line}", file=sys.stderr))
    if missing is not None:
        targets.append(TargetInfo.unloaded(spec, missing.reason, missing.error, env.name))
        results += unavailable_results([missing], checks)
        return
    remote = Remote(env)
    try:
        for result in env_targets.remote_results(spec, env, _remote_argv(args, spec), checks, remote,
                                                 lambda r: progress.grow(r.planned or 0)):
            results.append(result)
            progress.show(result)
    finally:  # also on Ctrl-C: the report names the target whose finished cases it holds
        targets += [TargetInfo.from_dict(t, env.name) for t in remote.targets] or [
            TargetInfo.unloaded(spec, remote.problem or "interrupted before it reported", True, env.name)]
        versions.update({f"{name} ({env.name})": v for name, v in remote.versions.items() if versions.get(name) != v})
        not_offered += [(spec, check) for spec, check in remote.not_offered]


def _remote_argv(args: argparse.Namespace, spec: str) -> list[str]:
    """This run's options, for the same run of `spec` alone in another process."""
    argv = ["--target", spec, "--profile", args.profile, "--seed", str(args.seed), "--workers", str(args.workers),
            "--db", str(args.db), "--regressions", str(args.regressions)]
    argv += [a for c in args.check or [] for a in ("--check", c)] + [a for f in args.family or [] for a in ("--family", f)]
    argv += ["--max-examples", str(args.max_examples)] if args.max_examples else []
    argv += ["--case-timeout", str(args.case_timeout)] if args.case_timeout else []
    argv += ["--main-job"] if not args.target or getattr(args, "main_job", False) else []
    return argv + (["--promote" if args.promote else "--no-promote"] if args.promote is not None else [])


def _stream(args: argparse.Namespace, selection: Plan, options: RunOptions) -> int:
    """The run as events on file descriptor --stream, for the process that started this one in an environment."""
    from harness.environments.launch import emit
    from harness.runner import absent_results, run_cases, unavailable_results

    with os.fdopen(args.stream, "w") as out:
        infos = [TargetInfo.of(spec, target) for spec, target in selection.targets]
        infos += [TargetInfo.unloaded(m.spec, m.reason, m.error) for m in selection.missing]
        absent = absent_results(selection)
        emit(out, plan=len(selection.cases) + len(absent), targets=[asdict(i) for i in infos],
             not_offered=selection.not_offered)
        for result in unavailable_results(selection.missing, selection.checks) + absent:
            emit(out, result=result.to_dict())
        try:
            for _, result in run_cases(selection.cases, options, args.workers):
                emit(out, result=result.to_dict())
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        emit(out, versions=library_versions())
    return EXIT_OK


def _store_options(args: argparse.Namespace) -> str:
    """The run's --db / --regressions as `replay` needs them to find what this run stored ("" for defaults)."""
    given = [(flag, path) for flag, path, default in (("--db", args.db, LOCAL_DIR),
                                                      ("--regressions", args.regressions, SHARED_DIR))
             if Path(path) != Path(default)]
    return "".join(f" {flag} {shlex.quote(str(path))}" for flag, path in given)


def _exit_code(report: Report) -> int:
    if any(r.verdict.status == Status.ERROR for r in report.results):
        return EXIT_USAGE
    return EXIT_VIOLATION if any(r.new_failure for r in report.results) else EXIT_OK


def _targets(args: argparse.Namespace) -> int:
    from harness.environments.builder import state
    from harness.environments.targets import elsewhere
    from harness.selection import Missing, try_load

    specs = list(args.specs or registered_targets())
    away = elsewhere(specs, here=False)
    infos = []
    for spec in specs:
        if spec in away:  # its library is in its own environment: say which, and whether it is built
            env, status = away[spec], state(away[spec]).status
            build = "" if status == "built" else f"; `moe-harness env build {env.name}` builds it"
            infos.append(TargetInfo(spec, spec, description=env.description, status="elsewhere", environment=env.name,
                                    reason=f"runs in its own environment {env.name} ({status}{build}): {env.description}"))
            continue
        loaded = try_load(spec)
        infos.append(TargetInfo.unloaded(spec, loaded.reason, loaded.error) if isinstance(loaded, Missing)
                     else TargetInfo.of(spec, loaded))
    print(targets_json(infos) if args.json else text.render_targets(infos))
    return EXIT_USAGE if any(i.status == "error" for i in infos) else EXIT_OK


def _checks() -> int:
    from harness.catalog import check_entries
    from harness.reports import catalog as catalog_text

    print(catalog_text.render_checks(check_entries()))
    return EXIT_OK


def _families(args: argparse.Namespace) -> int:
    """The families table; for --target, each check's verdict per family (prepared as a run prepares it)."""
    from harness.catalog import family_entries
    from harness.checks import CHECKS
    from harness.reports import catalog as catalog_text
    from harness.selection import Missing, try_load
    from harness.tiny_configs import undiscoverable_model_types

    if args.check and not args.target:
        raise UsageError("--check needs --target: whether a check runs on a family depends on the target")
    target = None
    if args.target:
        loaded = try_load(args.target)
        if isinstance(loaded, Missing):
            raise UsageError(f"target {args.target} did not load: {loaded.reason}")
        target = loaded
    unknown = [c for c in args.check or [] if c not in CHECKS]
    if unknown:
        raise UsageError(f"unknown check {', '.join(unknown)}; valid checks: {', '.join(CHECKS)}")
    checks = [CHECKS[c] for c in args.check] if args.check else [
        c for c in CHECKS.values() if target is not None and getattr(target, c.capability) is not None]
    entries = family_entries(target, checks)
    heading = (f"{len(entries)} families of target {args.target}" if target is not None else
               f"{len(entries)} families: the default set (*) and every MoE model type of the installed transformers")
    print(catalog_text.render_families(entries, undiscoverable_model_types(), heading))
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    """0: the directory loads cleanly as its family; 1: problems found in it; 2: it cannot be inspected (a bad
    path, an unknown family, an unreadable config), said in one line, or a bug of ours, said with where."""
    from harness import inspection
    from harness.reports import inspection as inspection_text

    try:
        result = inspection.inspect_checkpoint(args.directory, args.family)
    except inspection.InspectUsageError as exc:
        print(f"moe-harness inspect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line that says where, not a traceback
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"moe-harness inspect: internal error ({type(exc).__name__}: {exc}, at {Path(where.filename).name}:"
              f"{where.lineno}); please report it with the command line", file=sys.stderr)
        return EXIT_USAGE
    print(inspection_text.render(result))
    return EXIT_OK if result.clean else EXIT_VIOLATION


def _env(args: argparse.Namespace) -> int:
    """`env list`: 0. `env build`: 0 when every environment is ready, 1 when one failed to build (the step said).
    `env python`: the exit code of the environment's Python, once it is ready (1 when it failed to build)."""
    from harness.environments import builder
    from harness.environments.declaration import DeclarationError
    from harness.environments.registry import builtin_environments, environment_for
    from harness.reports.environments import render_states

    try:
        if args.env_command == "list":
            print(render_states([builder.state(e) for e in builtin_environments().values()]))
            return EXIT_OK
        envs = {name: environment_for(name) for name in args.names}
    except DeclarationError as exc:
        raise UsageError(str(exc)) from exc
    unknown = [name for name, e in envs.items() if e is None]
    if unknown:
        raise UsageError(f"no environment is declared for {', '.join(unknown)}; declared: "
                         f"{', '.join(builtin_environments())} (or a spec whose module has an environments.toml)")
    failed = False
    for name, declared in envs.items():
        assert declared is not None
        try:
            rebuilt = builder.build(declared, force=getattr(args, "force", False), say=print)
        except builder.EnvironmentBuildError as exc:
            print(f"moe-harness: {exc}", file=sys.stderr)
            failed = True
            continue
        if not rebuilt and args.env_command == "build":
            print(f"environment {name}: up to date at {builder.env_dir(declared)}")
    if args.env_command == "python" and not failed:
        declared = envs[args.names[0]]
        assert declared is not None
        return subprocess.run([str(builder.python_of(declared)), *args.arguments],
                              env=builder.launch_variables(declared)).returncode
    return EXIT_VIOLATION if failed else EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    from harness.environments.targets import elsewhere
    from harness.replay import prune, replay

    store = RegressionStore(args.db, args.regressions)
    stored = [rec for rec, _ in store.records()]
    missing = [c for c in dict.fromkeys(args.cases) if c not in {r.case_id for r in stored}]
    if missing:
        raise UsageError(f"no stored case {', '.join(map(repr, missing))}; "
                         f"stored cases: {', '.join(r.case_id for r in stored) or 'none'}")
    wanted = [r for r in stored if not args.cases or r.case_id in args.cases]
    away = elsewhere(sorted({r.target_spec for r in wanted}), args.here)
    codes = [_replay_elsewhere(args, env, [r.case_id for r in wanted if r.target_spec == spec])
             for spec, env in away.items()]
    here = [r.case_id for r in wanted if r.target_spec not in away]
    if here or not codes:
        replayed = replay(store, here)
        print(text.render_replayed(replayed))
        if args.prune:
            print(text.render_pruned(prune(store, replayed)))
        codes.append(_replay_exit_code(replayed))
    return max(codes)


def _replay_elsewhere(args: argparse.Namespace, env: Environment, cases: list[str]) -> int:
    """Replay `cases` with the harness in `env` (their target's own environment); its output is printed as it
    comes, and its exit code returned."""
    import subprocess

    from harness.environments.builder import launch_variables, python_of
    from harness.environments.targets import prepare

    print(f"replaying {len(cases)} case(s) in environment {env.name}:", flush=True)
    missing = prepare(cases[0], env, True, lambda line: print(f"moe-harness: {line}", file=sys.stderr))
    if missing is not None:
        print(f"moe-harness: {missing.reason}", file=sys.stderr)
        return EXIT_USAGE
    command = [str(python_of(env)), "-m", "harness.cli", "replay", *cases, "--here", "--db", str(args.db),
               "--regressions", str(args.regressions), *(["--prune"] if args.prune else [])]
    return subprocess.run(command, env=launch_variables(env), stdin=subprocess.DEVNULL).returncode


def _replay_exit_code(replayed: list[Replayed]) -> int:
    from harness.replay import ReplayOutcome

    if any(r.outcome == ReplayOutcome.ERROR for r in replayed):
        return EXIT_USAGE
    return EXIT_VIOLATION if any(r.outcome == ReplayOutcome.FAILED and not r.known for r in replayed) else EXIT_OK


def _report(args: argparse.Namespace) -> int:
    try:
        report = load_report(args.directory)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    renderers = {"text": lambda: text.render_report(report, families=args.families), "markdown": lambda: markdown.render(report),
                 "junit": lambda: junit.render(report), "json": report.to_json}
    print(renderers[args.format]().rstrip("\n"))
    return _exit_code(report)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `moe-harness` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or --help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    commands: dict[str, Callable[[], int]] = {
        "run": lambda: _run(args, "moe-harness " + shlex.join(argv)), "targets": lambda: _targets(args),
        "checks": _checks, "families": lambda: _families(args), "inspect": lambda: _inspect(args),
        "replay": lambda: _replay(args), "env": lambda: _env(args), "report": lambda: _report(args)}
    try:
        if args.command in ("run", "targets", "families", "inspect", "replay"):  # these import transformers
            from harness.engine import quiet_libraries

            quiet_libraries()
        return commands[args.command]()
    except UsageError as exc:
        print(f"moe-harness: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

"""Build a declared environment with `uv`, under the cache directory, and reuse it while its declaration holds.

Guarantees: `build` is idempotent (an environment whose stamp matches its fingerprint is reused as it is); a
changed declaration, constraints file, harness requirement set or Python rebuilds it from scratch; a failed
step raises EnvironmentBuildError naming the step, its command and the end of its output, and leaves no stamp,
so the next build starts over. Two processes building the same environment take turns (a file lock).
"""

from __future__ import annotations

import configparser
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from harness.environments.declaration import Environment

STAMP = "moe-harness-environment.json"
# Set in every process started in an environment: a run there runs its target here instead of starting
# another process for it.
INSIDE = "MOE_HARNESS_ENVIRONMENT"
UV_VERSION = "uv==0.13.9"


class EnvironmentBuildError(RuntimeError):
    """A step of building an environment failed: which step, the command, the end of what it printed."""

    def __init__(self, env: str, step: str, command: list[str], output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-12:])
        super().__init__(f"building environment {env!r} failed at step '{step}': {' '.join(command)}"
                         + (f"\n{tail}" if tail else ""))
        self.env, self.step, self.command, self.output = env, step, command, output


@dataclass(frozen=True)
class EnvironmentState:
    """An environment as it stands on disk: `status` is built, stale (its declaration changed since), or
    missing (never built, or a build that did not finish)."""

    env: Environment
    path: Path
    status: str
    size: int  # bytes on disk, each hard-linked file once (uv links files from its cache)
    built: str = ""
    seconds: float = 0.0


def cache_root() -> Path:
    """Where environments live: $MOE_HARNESS_CACHE, else $XDG_CACHE_HOME/moe-harness, else ~/.cache/moe-harness."""
    if os.environ.get("MOE_HARNESS_CACHE"):
        return Path(os.environ["MOE_HARNESS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moe-harness"


def env_dir(env: Environment) -> Path:
    return cache_root() / "envs" / re.sub(r"[^A-Za-z0-9_.-]+", "-", env.name)


def python_of(env: Environment) -> Path:
    return env_dir(env) / "bin" / "python"


def state(env: Environment) -> EnvironmentState:
    """How `env` stands on disk now; reads files only."""
    path = env_dir(env)
    stamp = _read_stamp(path)
    if not stamp:
        return EnvironmentState(env, path, "missing", _size(path))
    status = "built" if stamp.get("fingerprint") == _fingerprint(env) else "stale"
    return EnvironmentState(env, path, status, _size(path), stamp.get("built", ""), stamp.get("seconds", 0.0))


def build(env: Environment, *, force: bool = False, say: Callable[[str], None] = lambda _: None) -> bool:
    """Make `env` ready to run its target; True when it was (re)built, False when the built one was reused."""
    path = env_dir(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path.parent / f"{path.name}.lock"):
        if not force and state(env).status == "built":
            return False
        clock = time.perf_counter()
        shutil.rmtree(path, ignore_errors=True)
        uv = _uv(env)
        python = str(python_of(env))
        sources = [arg for link in find_links() for arg in ("--find-links", link)]
        constraints = ["-c", str(_constraints(env))] if _constraints(env) else []
        steps = [("create the virtual environment", [uv, "venv", "--quiet", "--python", sys.executable, str(path)])]
        wanted = [*(harness_requirements() if env.harness else ()), *env.requirements]
        if wanted:
            steps.append(("install the requirements", [uv, "pip", "install", "--python", python, *sources,
                                                       *constraints, *wanted]))
        if env.absent:
            steps.append(("remove the absent packages", [uv, "pip", "uninstall", "--python", python, *env.absent]))
        if env.no_deps:
            steps.append(("install without dependencies", [uv, "pip", "install", "--python", python, "--no-deps",
                                                           *sources, *env.no_deps]))
        for step, command in steps:
            say(f"environment {env.name}: {step}")
            _step(env, step, command)
        if env.stand_ins:
            say(f"environment {env.name}: add the stand-ins {', '.join(p.name for p in env.stand_ins)}")
            _add_stand_ins(env, python)
        seconds = round(time.perf_counter() - clock, 1)
        (path / STAMP).write_text(json.dumps({"fingerprint": _fingerprint(env), "seconds": seconds,
                                              "built": datetime.now(UTC).isoformat(timespec="seconds")}))
        say(f"environment {env.name}: built in {seconds} s at {path}")
        return True


def launch_variables(env: Environment) -> dict[str, str]:
    """The environment variables of a harness process started in `env`: this process's, less its virtual
    environment, with the environment's own variables, and the harness's source on the path (nothing else)."""
    variables = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    variables.update(env.variables)
    variables[INSIDE] = env.name
    variables["PYTHONPATH"] = str(_source_link())
    return variables


def find_links() -> list[str]:
    """Directories of wheels this machine's pip is told to look in ($PIP_FIND_LINKS, else pip's config files):
    uv reads neither, and the pinned CPU torch may be there rather than on the registry. uv reads
    $UV_FIND_LINKS itself."""
    if os.environ.get("PIP_FIND_LINKS"):
        return os.environ["PIP_FIND_LINKS"].split()
    config = configparser.ConfigParser()
    config.read([*(d + "/pip/pip.conf" for d in os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")),
                 "/etc/pip.conf", str(Path.home() / ".pip/pip.conf"), str(Path.home() / ".config/pip/pip.conf"),
                 os.environ.get("PIP_CONFIG_FILE", "")])
    return [link for section in ("global", "install") if config.has_option(section, "find-links")
            for link in config.get(section, "find-links").split()]


def harness_requirements() -> list[str]:
    """What the harness itself needs to run in any environment: its installed metadata's requirements, or its
    pyproject.toml's when it runs from a checkout that was never installed."""
    try:
        required = metadata.requires("moe-harness") or []
    except metadata.PackageNotFoundError:
        import tomllib

        required = tomllib.loads((_source_root() / "pyproject.toml").read_text())["project"]["dependencies"]
    return sorted(r for r in required if "extra ==" not in r)


def _constraints(env: Environment) -> Path | None:
    """The declaration's constraints file, else the harness's own pins (its checkout's constraints.txt): an
    unpinned torch would resolve to a CUDA build of several GB."""
    own = _source_root() / "constraints.txt"
    return env.constraints or (own if own.is_file() else None)


def _fingerprint(env: Environment) -> str:
    pins = _constraints(env)
    return env.fingerprint({"harness": harness_requirements(), "python": platform.python_version(),
                            "interpreter": sys.base_prefix, "pins": pins.read_text() if pins else ""})


def _read_stamp(path: Path) -> dict:
    try:
        return json.loads((path / STAMP).read_text()) if (path / "bin" / "python").exists() else {}
    except (OSError, ValueError):
        return {}


def _size(path: Path) -> int:
    seen: set[int] = set()
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
    return total


def _uv(env: Environment) -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvironmentBuildError(env.name, "find uv", ["uv"],
                                f"uv is not installed here: `pip install {UV_VERSION}` (bash scripts/setup.sh does)")


def _add_stand_ins(env: Environment, python: str) -> None:
    """Copy each stand-in package into the environment's site-packages (no metadata: to importlib.metadata, and so
    to transformers' availability checks, the package is not installed)."""
    command = [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    try:
        site = Path(subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip())
        for package in env.stand_ins:
            shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EnvironmentBuildError(env.name, "add the stand-ins", command, str(exc)) from exc


def _step(env: Environment, step: str, command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"UV_PYTHON_DOWNLOADS": "never"})
    except OSError as exc:
        raise EnvironmentBuildError(env.name, step, command, str(exc)) from exc
    if done.returncode != 0:
        raise EnvironmentBuildError(env.name, step, command, done.stderr + done.stdout)


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _source_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def _source_link() -> Path:
    """A directory holding only the harness's two packages (links to this copy): a process in another
    environment imports this very harness from it, and nothing of this environment's site-packages."""
    link_dir = cache_root() / "source" / re.sub(r"[^A-Za-z0-9]+", "-", str(_source_root())).strip("-")
    link_dir.mkdir(parents=True, exist_ok=True)
    for package in ("harness", "reference"):
        link = link_dir / package
        if not link.is_symlink() or link.resolve() != (_source_root() / package).resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(_source_root() / package)
    return link_dir

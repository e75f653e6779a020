"""What a target's environment needs, as data: read from an `environments.toml` beside the target's module.

Each table of the file declares one environment, named by the table, for the target of the same name (a
built-in target's name, or the `package.module:object` spec a user passes). Its keys:

    description   one line for `moe-harness env list`
    requirements  requirement strings installed with their dependencies, resolved together
    constraints   a constraints file, relative to the TOML file, that pins what they resolve to
    absent        distributions removed after that (packages a library cannot import beside)
    no_deps       requirement strings installed last, without their dependencies
    stand_ins     packages (directories relative to the TOML file) copied into the environment last: a small
                  stand-in for a package its library imports but that cannot be installed there, never code
                  under test (it must say so when used)
    variables     environment variables every process of the target starts with
    harness       false: the harness does not run there (a library that must be tested without torch); its
                  target runs in the harness's process and drives a worker script in this environment

The harness's own runtime requirements are added by the builder (unless `harness = false`), so a declaration
names only what its target needs beyond them.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILE_NAME = "environments.toml"
KEYS = ("description", "requirements", "constraints", "absent", "no_deps", "stand_ins", "variables", "harness")


class DeclarationError(ValueError):
    """An environments.toml that cannot be used; the message names the file, the table and the key."""


@dataclass(frozen=True)
class Environment:
    """One declared environment; `source` is the TOML file it came from."""

    name: str
    source: Path
    description: str = ""
    requirements: tuple[str, ...] = ()
    constraints: Path | None = None
    absent: tuple[str, ...] = ()
    no_deps: tuple[str, ...] = ()
    stand_ins: tuple[Path, ...] = ()
    variables: dict[str, str] = field(default_factory=dict)
    harness: bool = True

    def fingerprint(self, extra: dict[str, Any]) -> str:
        """A digest of everything the built environment depends on: this declaration, the constraints file's
        text and `extra` (the harness's requirements, the Python it is built with); a change means a rebuild."""
        # Contents, not paths: two checkouts of one declaration share its built environment.
        data = asdict(self) | {"source": None, "constraints": None, "stand_ins": None, "extra": extra}
        data["constraints_text"] = self.constraints.read_text() if self.constraints else ""
        data["stand_ins_text"] = {f"{package.name}/{file.relative_to(package)}": file.read_text()
                                  for package in self.stand_ins for file in sorted(package.rglob("*.py"))}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def read_declarations(path: Path) -> dict[str, Environment]:
    """Every environment `path` declares, by name; DeclarationError says what is wrong and where."""
    try:
        tables = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DeclarationError(f"{path}: cannot be read as TOML: {exc}") from exc
    return {name: _environment(name, table, path) for name, table in tables.items()}


def _environment(name: str, table: Any, path: Path) -> Environment:
    where = f"{path} [{name}]"
    if not isinstance(table, dict):
        raise DeclarationError(f"{where}: must be a table of {', '.join(KEYS)}")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise DeclarationError(f"{where}: unknown key {', '.join(unknown)}; the keys are {', '.join(KEYS)}")
    constraints = None
    if "constraints" in table:
        constraints = (path.parent / _text(table, "constraints", where)).resolve()
        if not constraints.is_file():
            raise DeclarationError(f"{where}: constraints file {constraints} does not exist")
    stand_ins = tuple((path.parent / p).resolve() for p in _strings(table, "stand_ins", where))
    for package in stand_ins:
        if not (package / "__init__.py").is_file():
            raise DeclarationError(f"{where}: stand-in {package} is not a package directory (no __init__.py)")
    variables = table.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise DeclarationError(f"{where}: variables must be a table of strings, e.g. variables = {{ NAME = \"value\" }}")
    if not isinstance(table.get("harness", True), bool):
        raise DeclarationError(f"{where}: harness must be true or false")
    return Environment(name, path, _text(table, "description", where) if "description" in table else "",
                       _strings(table, "requirements", where), constraints, _strings(table, "absent", where),
                       _strings(table, "no_deps", where), stand_ins, dict(variables), table.get("harness", True))


def _text(table: dict[str, Any], key: str, where: str) -> str:
    if not isinstance(table[key], str):
        raise DeclarationError(f"{where}: {key} must be a string")
    return table[key]


def _strings(table: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DeclarationError(f"{where}: {key} must be a list of strings, e.g. {key} = [\"package==1.0\"]")
    return tuple(value)

"""Which environment a target runs in, found without importing the target (its libraries may be missing here).

A built-in target's environment is a table named after it in an `environments.toml` of a package under
`harness/targets/`; a user's `package.module:object` adapter declares its own in an `environments.toml`
beside the module file, in a table named by that spec. A target with no declaration runs in the environment
the harness itself runs in.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.environments.declaration import FILE_NAME, Environment, read_declarations

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"


def builtin_environments() -> dict[str, Environment]:
    """Every environment the built-in target packages declare, by name (= the target it serves)."""
    found: dict[str, Environment] = {}
    for path in sorted(TARGETS_DIR.glob(f"*/{FILE_NAME}")):
        found.update(read_declarations(path))
    return found


def environment_for(spec: str) -> Environment | None:
    """The environment `spec` declares, or None: it runs wherever the harness runs."""
    if ":" not in spec:
        return builtin_environments().get(spec)
    module_file = _module_file(spec.partition(":")[0])
    if module_file is None or not (module_file.parent / FILE_NAME).is_file():
        return None
    return read_declarations(module_file.parent / FILE_NAME).get(spec)


def _module_file(module: str) -> Path | None:
    """Where `module` would be imported from (the current directory first, as the target loader does),
    found by path alone: importing it could fail here for want of the very libraries its environment adds."""
    relative = Path(*module.split("."))
    for entry in [os.getcwd(), *sys.path]:
        base = Path(entry or os.getcwd()) / relative
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None

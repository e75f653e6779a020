"""No network at run time: the hub libraries forced offline in this process and every process it starts.

`harness/__init__` calls `force_offline()` before anything imports transformers, so the CLI, the pytest plugin
and each spawned worker (which inherits the environment and imports `harness` again) read local files only.
A library imported earlier (a user's conftest) has its cached setting switched too.
"""

from __future__ import annotations

import os
import sys

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def force_offline() -> None:
    """Set the hub libraries' offline switches, whatever the environment said."""
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # read at import time: already imported, so switch its copy too
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]

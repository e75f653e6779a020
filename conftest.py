"""Root conftest: keep third-party chatter out of test output; the moe-harness plugin loads by entry point."""

from harness.engine import quiet_libraries

quiet_libraries()

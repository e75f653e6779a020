"""The exit codes of every `moe-harness` command (the README's exit table)."""

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT; the report holds what finished

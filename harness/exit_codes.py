"""The exit codes of every `moe-harness` command (the README's exit table)."""

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT; the report holds what finished


class UsageError(ValueError):
    """A command line that cannot run: a name that matches no target, check or family (the message lists the
    valid ones), or options that do not go together. Exit EXIT_USAGE, one line, no traceback."""

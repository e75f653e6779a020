"""What a check returns: a verdict with its classification and a readable counterexample."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, ERROR, SKIP, KNOWN = "pass", "fail", "error", "skip", "known"

# Why a case did not pass: the property was violated, the target raised on valid input,
# or the harness itself could not run the case.
PROPERTY_VIOLATION = "property-violation"
TARGET_ERROR = "target-error"
HARNESS_ERROR = "harness-error"


class PropertyViolation(AssertionError):
    """A check's property does not hold; `details` holds the observed and expected values."""

    def __init__(self, message: str, tolerance: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.tolerance = tolerance
        self.details = details


class TargetError(Exception):
    """The target raised on an input it must accept."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause


class CheckSkipped(Exception):
    """This check does not apply to this target × family (a capability is missing); says why."""


@dataclass
class Verdict:
    """The outcome of one check over one target and one family."""

    check: str
    target: str
    family: str
    status: str
    kind: str | None = None
    message: str = ""
    counterexample: dict[str, Any] = field(default_factory=dict)
    tolerance: str | None = None
    reproduce: str = ""
    examples: int = 0
    seconds: float = 0.0
    known_reason: str | None = None

    @property
    def case_id(self) -> str:
        return f"{self.check}[{self.target}-{self.family}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

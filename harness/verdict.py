"""What a check returns: a verdict with its classification and a readable counterexample."""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """How one case ended; the values are what report.json and junit.xml hold."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"
    KNOWN = "known"  # failed, and the target lists the failure as known


class ErrorKind(StrEnum):
    """Why a case did not pass: the property was violated, the target raised on valid input, the target's
    environment could not be built or could not provide the target, or the harness itself could not run it."""

    PROPERTY_VIOLATION = "property-violation"
    TARGET_ERROR = "target-error"
    ENVIRONMENT_ERROR = "environment-error"
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


def raised_at(exc: BaseException) -> str:
    """`file:line` of the innermost frame `exc` passed through: where the target's code raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "unknown location"


class SkipKind(StrEnum):
    """Why a case did not run, of the only two kinds a skip may be: the capability does not exist for the
    family (not applicable), or the reference does not model it (a harness limit, listed in the family record)."""

    NOT_APPLICABLE = "not-applicable"
    HARNESS_LIMIT = "harness-limit"


class SkipReason(str):
    """A skip's one-line reason that also says its kind; a plain `str` reason has no kind (unclassified)."""

    kind: SkipKind

    def __new__(cls, reason: str, kind: SkipKind) -> SkipReason:
        made = super().__new__(cls, reason)
        made.kind = kind
        return made

    def __getnewargs__(self) -> tuple[str, SkipKind]:  # type: ignore[override]  # pickles with its kind
        return str(self), self.kind


def not_applicable(reason: str) -> SkipReason:
    """`reason` as a not-applicable skip: the capability does not exist for this target × family."""
    return SkipReason(reason, SkipKind.NOT_APPLICABLE)


def harness_limit(reason: str) -> SkipReason:
    """`reason` as a harness-limit skip: the reference does not model it (the family record says so)."""
    return SkipReason(reason, SkipKind.HARNESS_LIMIT)


def skip_kind(reason: str) -> SkipKind | None:
    """The kind `reason` carries, None for a plain string."""
    return getattr(reason, "kind", None)


class CheckSkipped(Exception):
    """This check does not apply to this target × family (a capability is missing); says why. Raised with a
    SkipReason, the skip keeps its kind."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def to_reply(self) -> dict[str, str]:
        """The skip as a JSON-able reply of a helper process (`from_reply` raises it again, its kind kept)."""
        return {"skip": str(self.reason), "kind": str(skip_kind(self.reason))}

    @classmethod
    def from_reply(cls, reply: dict[str, str]) -> CheckSkipped:
        return cls(SkipReason(reply["skip"], SkipKind(reply["kind"])))


@dataclass
class Verdict:
    """The outcome of one check over one target and one family."""

    check: str
    target: str
    family: str
    status: Status
    kind: ErrorKind | None = None
    message: str = ""
    counterexample: dict[str, Any] = field(default_factory=dict)
    tolerance: str | None = None
    reproduce: str = ""
    examples: int = 0
    seconds: float = 0.0
    known_reason: str | None = None
    skip_kind: SkipKind | None = None  # for a SKIP: its kind; None when the reason did not say (unclassified)

    def __post_init__(self) -> None:
        # Plain strings (report.json read back, a test's literal) become the enums they name.
        self.status = Status(self.status)
        self.kind = None if self.kind is None else ErrorKind(self.kind)
        self.skip_kind = None if self.skip_kind is None else SkipKind(self.skip_kind)

    @property
    def case_id(self) -> str:
        return f"{self.check}[{self.target}-{self.family}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

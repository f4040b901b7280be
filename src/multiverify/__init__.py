"""multiverify: confirm a loan applicant over several channels, get one explained verdict."""

from __future__ import annotations

from ._applicant import (
    Address,
    Applicant,
    Consent,
    Contact,
    LoanApplication,
    RepaymentSchedule,
    normalize_phone,
)
from ._audit import AuditEvent, AuditTrail
from ._clock import Clock, SystemClock
from ._results import (
    Challenge,
    ChannelResult,
    Evidence,
    Outcome,
    PolicyRef,
    Reason,
    ResultStatus,
    ReviewDecision,
    RuleTrace,
    Signal,
    StepSummary,
    Verdict,
)
from ._review import ReviewCase, ReviewEvent, ReviewQueue, ReviewRuntime
from ._session import ReviewState, Session, SessionStatus, StepRecord, StepState
from ._specs import ChannelSpec
from ._verifier import OnReview, OnVerdict, Verifier
from ._worker import Worker
from .policy import Fallback, Policy, RetrySettings, ReviewSettings, Rule, Step

__all__ = [
    "Address",
    "Applicant",
    "AuditEvent",
    "AuditTrail",
    "Challenge",
    "ChannelResult",
    "ChannelSpec",
    "Clock",
    "Consent",
    "Contact",
    "Evidence",
    "Fallback",
    "LoanApplication",
    "OnReview",
    "OnVerdict",
    "Outcome",
    "Policy",
    "PolicyRef",
    "Reason",
    "RepaymentSchedule",
    "ResultStatus",
    "RetrySettings",
    "ReviewCase",
    "ReviewDecision",
    "ReviewEvent",
    "ReviewQueue",
    "ReviewRuntime",
    "ReviewSettings",
    "ReviewState",
    "Rule",
    "RuleTrace",
    "Session",
    "SessionStatus",
    "Signal",
    "Step",
    "StepRecord",
    "StepState",
    "StepSummary",
    "SystemClock",
    "Verdict",
    "Verifier",
    "Worker",
    "normalize_phone",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - lazy: costs only when asked

        return version("multiverify")
    raise AttributeError(f"module 'multiverify' has no attribute {name!r}")

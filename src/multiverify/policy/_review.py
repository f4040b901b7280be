"""A policy's ``[review]`` table: how people decide its verdicts of review.

Kept apart from the rest of the policy model: a policy without the table
behaves (and hashes) exactly as before, and its verdicts of ``review`` are
final; with it, such a session waits in the review queue for a person.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .._duration import format_duration, parse_duration
from .._results import Outcome
from ..exceptions import PolicyError, PolicyProblem

if TYPE_CHECKING:
    from ._model import Step

__all__ = ["REVIEW_QUEUE", "ReviewSettings"]

REVIEW_QUEUE = "review"
"""The work queue review cases wait in, whatever their policy."""

_REASON = re.compile(r"[a-z][a-z0-9_.-]{0,62}")


def invalid(path: str, message: str) -> PolicyError:
    """The error of one bad value of a policy built in Python, located at ``path``."""
    return PolicyError(
        message=f"{path}: {message}",
        problems=(PolicyProblem(path=path, message=message),),
    )


def _seconds_at(path: str, value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise invalid(path, str(exc)) from None


def sequence_at(path: str, values: object) -> tuple[Any, ...]:
    """``values`` as a tuple; a string or a non-iterable is a located error.

    A string is iterable too, but ``providers="twilio"`` is not six providers.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise invalid(path, f"expected a list, got {type(values).__name__}")
    return tuple(values)


# Named converters, one per field, as the attrs plugin for mypy needs them.


def _sla(value: object) -> float | None:
    return None if value is None else _seconds_at("review.sla", value)


def _fallback_after(value: object) -> float | None:
    return None if value is None else _seconds_at("review.fallback_after", value)


def _lease(value: object) -> float:
    return _seconds_at("review.lease", value)


def _approve_reasons(values: Iterable[str]) -> tuple[str, ...]:
    return sequence_at("review.approve_reasons", values)


def _reject_reasons(values: Iterable[str]) -> tuple[str, ...]:
    return sequence_at("review.reject_reasons", values)


def _steps(values: Iterable[Step]) -> tuple[Step, ...]:
    return sequence_at("review.evidence", values)


def _outcome(value: str) -> Outcome:
    try:
        return Outcome(value)
    except ValueError:
        names = ", ".join(sorted(member.value for member in Outcome))
        raise invalid(
            "review.fallback", f"{value!r} is not an outcome (one of {names})"
        ) from None


def _integer_at(path: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(path, f"expected an integer, got {type(value).__name__}")

    return check


def texts_at(path: str) -> Any:
    """A validator: every item of a tuple is a string, or the first other is located."""
    return each_at(path, str, "a string")


def each_at(path: str, kind: type, what: str | None = None) -> Any:
    """A validator: every item of a tuple is a ``kind``, or the first other is located."""
    expected = what or f"a {kind.__name__}"

    def check(_inst: object, _attr: object, values: tuple[object, ...]) -> None:
        for index, value in enumerate(values):
            if not isinstance(value, kind):
                raise invalid(
                    f"{path}[{index}]",
                    f"expected {expected}, got {type(value).__name__}",
                )

    return check


def _evidence(inst: object, attr: object, values: tuple[object, ...]) -> None:
    from ._model import Step  # noqa: PLC0415 - the model imports this module

    each_at("review.evidence", Step)(inst, attr, values)


@attrs.frozen(kw_only=True)
class ReviewSettings:
    """How a policy's verdicts of ``review`` are decided by people, and how soon.

    A session whose automatic verdict is ``review`` waits in the review queue
    instead of finishing. A case not decided within ``sla`` escalates once
    (its priority goes up by ``escalate_by`` and the app hears of it); one
    not decided within ``fallback_after`` takes the ``fallback`` outcome.
    Both limits count from the moment the case entered the queue, evidence
    collection included.

    Attributes:
        priority: the priority a case enters the queue with (higher first).
        sla: seconds within which a case should be decided (``None``: no SLA).
        escalate_by: how much an escalation raises the priority.
        fallback_after: seconds after which an undecided case takes
            ``fallback`` (``None``: it waits for a person however long).
        fallback: the outcome then: ``approved``, ``rejected`` or ``expired``.
        lease: how long a claim holds a case by default, in seconds.
        approve_reasons: reason codes a reviewer may approve with (empty:
            any well-formed code).
        reject_reasons: reason codes a reviewer may reject with (empty: any).
        evidence: extra steps a reviewer may ask for (a video sign, a call);
            they never run on their own, and may set only ``id``,
            ``channel``, ``timeout``, ``retry``, ``providers`` and ``options``.
    """

    priority: int = attrs.field(default=0, validator=_integer_at("review.priority"))
    sla: float | None = attrs.field(default=None, converter=_sla)
    escalate_by: int = attrs.field(
        default=10, validator=_integer_at("review.escalate_by")
    )
    fallback_after: float | None = attrs.field(default=None, converter=_fallback_after)
    fallback: Outcome = attrs.field(default=Outcome.REJECTED, converter=_outcome)
    lease: float = attrs.field(default=900.0, converter=_lease)
    approve_reasons: tuple[str, ...] = attrs.field(
        default=(),
        converter=_approve_reasons,
        validator=texts_at("review.approve_reasons"),
    )
    reject_reasons: tuple[str, ...] = attrs.field(
        default=(),
        converter=_reject_reasons,
        validator=texts_at("review.reject_reasons"),
    )
    evidence: tuple[Step, ...] = attrs.field(
        default=(), converter=_steps, validator=_evidence
    )

    def reasons_for(self, outcome: Outcome) -> tuple[str, ...]:
        """The reason codes allowed with a decision (empty: any well-formed code)."""
        return (
            self.approve_reasons if outcome is Outcome.APPROVED else self.reject_reasons
        )

    def evidence_step(self, step_id: str) -> Step | None:
        """The evidence step with this id, if the policy offers it."""
        return next((step for step in self.evidence if step.id == step_id), None)


def reason_code_ok(code: str) -> bool:
    """Whether ``code`` is a well-formed reason code (``docs_verified``)."""
    return _REASON.fullmatch(code) is not None


def review_dict(settings: ReviewSettings, step_dict: Any) -> dict[str, Any]:
    """The ``[review]`` table as policy files write it (``step_dict`` renders a step)."""
    out: dict[str, Any] = {}
    if settings.priority:
        out["priority"] = settings.priority
    if settings.sla is not None:
        out["sla"] = format_duration(settings.sla)
    out["escalate_by"] = settings.escalate_by
    if settings.fallback_after is not None:
        out["fallback_after"] = format_duration(settings.fallback_after)
    out["fallback"] = settings.fallback.value
    out["lease"] = format_duration(settings.lease)
    if settings.approve_reasons:
        out["approve_reasons"] = list(settings.approve_reasons)
    if settings.reject_reasons:
        out["reject_reasons"] = list(settings.reject_reasons)
    if settings.evidence:
        out["evidence"] = [step_dict(step) for step in settings.evidence]
    return out


def review_problems(
    settings: ReviewSettings, step_ids: Mapping[str, int]
) -> list[PolicyProblem]:
    """The located mistakes of a ``[review]`` table (its evidence steps' channels aside)."""
    problems: list[PolicyProblem] = []

    def problem(path: str, message: str) -> None:
        problems.append(PolicyProblem(path=f"review.{path}", message=message))

    if settings.sla is not None and settings.sla <= 0:
        problem("sla", "must be longer than zero")
    if settings.fallback_after is not None:
        if settings.fallback_after <= 0:
            problem("fallback_after", "must be longer than zero")
        elif settings.sla is not None and settings.fallback_after <= settings.sla:
            problem(
                "fallback_after",
                f"must be longer than sla ({format_duration(settings.sla)}): "
                "a case escalates before it falls back",
            )
    if settings.fallback is Outcome.REVIEW:
        problem("fallback", "a case cannot fall back to review again")
    if settings.escalate_by < 0:
        problem("escalate_by", f"must not be negative, got {settings.escalate_by}")
    if settings.lease <= 0:
        problem("lease", "must be longer than zero")
    for key, codes in (
        ("approve_reasons", settings.approve_reasons),
        ("reject_reasons", settings.reject_reasons),
    ):
        seen: set[str] = set()
        for index, code in enumerate(codes):
            if not reason_code_ok(code):
                problem(
                    f"{key}[{index}]",
                    f"{code!r} is not a reason code (lowercase letters, digits, _ . -)",
                )
            elif code in seen:
                problem(f"{key}[{index}]", f"duplicate reason code {code!r}")
            seen.add(code)
    evidence_ids: set[str] = set()
    for index, step in enumerate(settings.evidence):
        path = f"evidence[{index}]"
        if step.id in step_ids:
            problem(
                f"{path}.id",
                f"step id {step.id!r} is already steps[{step_ids[step.id]}]",
            )
        elif step.id in evidence_ids:
            problem(f"{path}.id", f"duplicate evidence step id {step.id!r}")
        evidence_ids.add(step.id)
        for name, unset in (
            ("after", not step.after),
            ("when", step.when is None),
            ("fallback", step.fallback is None),
            ("optional", not step.optional),
        ):
            if not unset:
                problem(
                    f"{path}.{name}",
                    "not allowed in an evidence step: it runs when a reviewer asks",
                )
    return problems

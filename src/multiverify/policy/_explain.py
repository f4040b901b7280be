"""A policy in plain words: its step graph, its rules, its default and deadline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._duration import format_duration
from .._results import ResultStatus
from ._model import RetrySettings

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._model import Policy, Step

__all__ = ["explain_policy"]


def explain_policy(policy: Policy) -> str:
    """Describe a policy in plain words, one line per step and per rule.

    Args:
        policy: the policy to describe.

    Returns:
        Several lines of text, without a trailing newline, such as::

            Policy consumer-loan, version 2026-11-28 (hash 24fd0ba47891)

            Steps:
              1. bureau — credit_bureau; starts at once; times out after 10s
              2. call — phone_call; after bureau; only when application.amount > 2000
    """
    lines = [
        f"Policy {policy.name}, version {policy.version} (hash {policy.hash[:12]})",
        "",
        "Steps:",
    ]
    sources = {
        step.fallback.step: step.id
        for step in policy.steps
        if step.fallback is not None
    }
    lines.extend(
        f"  {number}. {_step_line(step, sources.get(step.id))}"
        for number, step in enumerate(policy.steps, start=1)
    )
    lines.append("")
    if policy.rules:
        lines.append("Rules, in order; the first that holds decides:")
        for number, rule in enumerate(policy.rules, start=1):
            line = f"  {number}. {rule.outcome.value} when {rule.when} (reason {rule.reason})"
            if rule.message:
                line += f": {rule.message}"
            lines.append(line)
    else:
        lines.append("Rules: none.")
    waits = (
        "every step"
        if not any(s.optional for s in policy.steps)
        else ("every step that is not optional")
    )
    lines.append(f"Otherwise: {policy.default.value}, once {waits} has ended.")
    if policy.score is None:
        lines.append("Score: the mean of the step scores.")
    else:
        lines.append(f"Score: {policy.score}")
    if policy.deadline is None:
        lines.append("Deadline: none.")
    else:
        lines.append(
            f"Deadline: {format_duration(policy.deadline)} after the start, "
            f"then {policy.on_deadline.value}."
        )
    if policy.review is not None:
        lines.extend(_review_lines(policy))
    return "\n".join(lines)


def _review_lines(policy: Policy) -> list[str]:
    """The ``[review]`` table in words: who settles a verdict of review, and how soon."""
    review = policy.review
    assert review is not None  # noqa: S101 - checked by the caller
    lines = ["", "Review: a verdict of review waits for a person in the review queue."]
    terms = [f"priority {review.priority}"]
    if review.sla is not None:
        terms.append(
            f"escalates by {review.escalate_by} after {format_duration(review.sla)}"
        )
    if review.fallback_after is not None:
        terms.append(
            f"becomes {review.fallback.value} after "
            f"{format_duration(review.fallback_after)} undecided"
        )
    terms.append(f"claims last {format_duration(review.lease)}")
    lines.append("  " + "; ".join(terms) + ".")
    for label, codes in (
        ("approve", review.approve_reasons),
        ("reject", review.reject_reasons),
    ):
        lines.append(
            f"  Reasons to {label}: {', '.join(codes) if codes else 'any code'}."
        )
    lines.extend(
        f"  Evidence on request: {_step_line(step, None, starts=False)}"
        for step in review.evidence
    )
    return lines


def _step_line(step: Step, fallback_of: str | None, *, starts: bool = True) -> str:
    parts = [f"{step.id} — {step.channel}"]
    if starts:
        parts.extend(_start_words(step, fallback_of))
    if step.when is not None:
        parts.append(f"only when {step.when}")
    if step.timeout is not None:
        parts.append(f"times out after {format_duration(step.timeout)}")
    if step.retry != RetrySettings():
        parts.append(_retry_words(step.retry))
    if step.providers:
        parts.append(f"providers {_words(step.providers, 'then')}")
    if step.fallback is not None:
        statuses = [
            status.value for status in ResultStatus if status in step.fallback.on
        ]
        parts.append(
            f"if it ends {_words(statuses, 'or')}, {step.fallback.step} starts"
        )
    if step.optional:
        parts.append("optional: the default outcome does not wait for it")
    if step.options:
        settings = ", ".join(f"{key}={value!r}" for key, value in step.options.items())
        parts.append(f"options {settings}")
    return "; ".join(parts)


def _start_words(step: Step, fallback_of: str | None) -> list[str]:
    """When a step starts: at once, after others, or as a fallback."""
    words = []
    if fallback_of is not None:
        words.append(f"only as the fallback of {fallback_of}")
    if step.after:
        words.append(f"after {_words(step.after, 'and')}")
    return words or ["starts at once"]


def _retry_words(retry: RetrySettings) -> str:
    if retry.attempts == 1:
        return "no retries"
    words = (
        f"tries up to {retry.attempts} times, waiting "
        f"{format_duration(retry.wait_initial)} to {format_duration(retry.wait_max)} between tries"
    )
    if retry.wait_jitter:
        words += f" plus up to {format_duration(retry.wait_jitter)}"
    if retry.timeout is not None:
        words += f", {format_duration(retry.timeout)} in all"
    return words


def _words(items: Iterable[str], last: str) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    names = list(items)
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} {last} {names[-1]}"

"""Tests for the error hierarchy."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime

import pytest

from multiverify import exceptions
from multiverify.exceptions import (
    AuditIntegrityError,
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidInputError,
    MultiverifyError,
    NotInReviewError,
    PhoneNumberRefusedError,
    PolicyError,
    PolicyProblem,
    ProviderAuthError,
    ProviderError,
    ProviderNumberRejectedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderUnavailableError,
    PullNotPermittedError,
    QuotaExceededError,
    ReviewClaimedError,
    SessionError,
    SessionFinishedError,
    SessionNotFoundError,
    StepNotFoundError,
    StepNotWaitingError,
    StoreUnavailableError,
    WebhookError,
    WebhookFormatError,
    WebhookSignatureError,
)

PARENTS: dict[type[MultiverifyError], type[Exception]] = {
    MultiverifyError: Exception,
    ConfigurationError: MultiverifyError,
    PolicyError: ConfigurationError,
    InvalidInputError: MultiverifyError,
    PhoneNumberRefusedError: InvalidInputError,
    QuotaExceededError: MultiverifyError,
    PullNotPermittedError: MultiverifyError,
    ProviderError: MultiverifyError,
    ProviderNumberRejectedError: ProviderRejectedError,
    ProviderUnavailableError: ProviderError,
    ProviderRateLimitedError: ProviderError,
    ProviderAuthError: ProviderError,
    ProviderRejectedError: ProviderError,
    ProviderResponseError: ProviderError,
    SessionError: MultiverifyError,
    SessionNotFoundError: SessionError,
    SessionFinishedError: SessionError,
    ConcurrentUpdateError: SessionError,
    StepNotFoundError: SessionError,
    StepNotWaitingError: SessionError,
    NotInReviewError: SessionError,
    ReviewClaimedError: SessionError,
    AuditIntegrityError: MultiverifyError,
    StoreUnavailableError: MultiverifyError,
    WebhookError: MultiverifyError,
    WebhookSignatureError: WebhookError,
    WebhookFormatError: WebhookError,
}

# One valid instance of every error, built with only its required fields.
EXAMPLES: list[MultiverifyError] = [
    MultiverifyError(message="boom"),
    ConfigurationError(message="no channels"),
    PolicyError(message="bad policy"),
    InvalidInputError(message="phone: invalid", field="phone"),
    ProviderError(message="failed", provider="acme"),
    ProviderUnavailableError(message="down", provider="acme"),
    ProviderRateLimitedError(message="slow down", provider="acme"),
    ProviderAuthError(message="denied", provider="acme"),
    ProviderRejectedError(message="refused", provider="acme"),
    ProviderNumberRejectedError(message="bad number", provider="acme"),
    PhoneNumberRefusedError(message="premium", field="phone", reason="premium_rate"),
    QuotaExceededError(message="too many", quota="phone"),
    PullNotPermittedError(message="no consent", reason="no_consent", purpose="p"),
    ProviderResponseError(message="no url", provider="acme", field="url"),
    SessionError(message="session", session_id="s1"),
    SessionNotFoundError(message="missing", session_id="s1"),
    SessionFinishedError(message="done", session_id="s1"),
    ConcurrentUpdateError(message="stale", session_id="s1", expected_version=3),
    StepNotFoundError(message="no step", session_id="s1", step_id="sms"),
    StepNotWaitingError(message="not waiting", session_id="s1", step_id="sms"),
    NotInReviewError(message="not in review", session_id="s1"),
    ReviewClaimedError(
        message="claimed",
        session_id="s1",
        claimed_by="alice",
        claimed_until=datetime(2025, 1, 1, tzinfo=UTC),
    ),
    AuditIntegrityError(message="tampered", index=7),
    StoreUnavailableError(message="redis is down", store="redis"),
    WebhookError(message="refused", vendor="twilio"),
    WebhookSignatureError(message="forged", vendor="twilio"),
    WebhookFormatError(message="garbled", vendor="vonage"),
]


class TestHierarchy:
    @pytest.mark.parametrize(("cls", "parent"), PARENTS.items())
    def test_direct_parent(
        self, cls: type[MultiverifyError], parent: type[Exception]
    ) -> None:
        """Each error sits under the parent drawn in the module docstring."""
        assert cls.__bases__ == (parent,)

    def test_every_exported_error_is_covered(self) -> None:
        """The table above lists every exported exception class."""
        exported = {
            getattr(exceptions, name)
            for name in exceptions.__all__
            if isinstance(getattr(exceptions, name), type)
            and issubclass(getattr(exceptions, name), BaseException)
        }
        assert exported == set(PARENTS)
        assert {type(error) for error in EXAMPLES} == set(PARENTS)

    def test_all_is_sorted(self) -> None:
        """``__all__`` is sorted."""
        assert list(exceptions.__all__) == sorted(exceptions.__all__)

    def test_docstring_draws_every_error(self) -> None:
        """The module docstring names every error class in its tree."""
        assert exceptions.__doc__ is not None
        for cls in PARENTS:
            assert cls.__name__ in exceptions.__doc__

    @pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
    def test_raise_and_catch_as_base(self, error: MultiverifyError) -> None:
        """Every error can be raised and caught as ``MultiverifyError``."""
        with pytest.raises(MultiverifyError) as info:
            raise error
        assert info.value is error

    def test_catch_by_intermediate_class(self) -> None:
        """A specific error is caught by its family, not by a sibling family."""
        with pytest.raises(ProviderError):
            raise ProviderAuthError(message="denied", provider="acme")
        with pytest.raises(SessionError):
            raise StepNotWaitingError(message="x", session_id="s1", step_id="sms")
        assert not isinstance(
            ProviderAuthError(message="denied", provider="acme"), SessionError
        )


class TestMultiverifyError:
    @pytest.mark.parametrize(
        "error",
        [e for e in EXAMPLES if not isinstance(e, PolicyError)],
        ids=lambda e: type(e).__name__,
    )
    def test_str_is_the_message(self, error: MultiverifyError) -> None:
        """``str()`` gives only the message, without the other fields."""
        assert str(error) == error.message

    @pytest.mark.parametrize(
        "cls", [MultiverifyError, InvalidInputError, ProviderError, SessionError]
    )
    def test_fields_are_keyword_only(self, cls: type[MultiverifyError]) -> None:
        """Errors cannot be built from positional arguments."""
        with pytest.raises(TypeError):
            cls("message", "extra")  # type: ignore[call-arg]

    def test_missing_required_field_fails(self) -> None:
        """Leaving out a required field is a ``TypeError``."""
        with pytest.raises(TypeError, match="field"):
            InvalidInputError(message="x")  # type: ignore[call-arg]

    def test_equality_is_identity(self) -> None:
        """Like other exceptions, two errors with the same fields are not equal."""
        first = InvalidInputError(message="x", field="f")
        assert first == first  # noqa: PLR0124
        assert first != InvalidInputError(message="x", field="f")

    @pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
    def test_pickle_round_trip(self, error: MultiverifyError) -> None:
        """An error survives pickling (process pools, task queues) field for field."""
        restored = pickle.loads(pickle.dumps(error))  # noqa: S301
        assert type(restored) is type(error)
        assert repr(restored) == repr(error)
        assert str(restored) == str(error)

    def test_copy(self) -> None:
        """``copy.copy`` rebuilds an error with the same fields."""
        error = ProviderRateLimitedError(
            message="slow", provider="acme", retry_after=1.5, status_code=429
        )
        clone = copy.copy(error)
        assert clone is not error
        assert (clone.retry_after, clone.status_code) == (1.5, 429)

    def test_repr_shows_fields(self) -> None:
        """The repr names the class and its fields."""
        error = InvalidInputError(message="bad", field="phone")
        assert repr(error) == "InvalidInputError(message='bad', field='phone')"


class TestInvalidInputError:
    def test_field(self) -> None:
        """``field`` names the offending input."""
        assert InvalidInputError(message="x", field="contacts.phone").field == (
            "contacts.phone"
        )


class TestProviderError:
    def test_defaults(self) -> None:
        """Status, request id and retry hint default to ``None`` and not retryable."""
        error = ProviderError(message="x", provider="acme")
        assert error.provider == "acme"
        assert error.status_code is None
        assert error.request_id is None
        assert error.retryable is False

    @pytest.mark.parametrize(
        ("cls", "retryable"),
        [
            (ProviderUnavailableError, True),
            (ProviderRateLimitedError, True),
            (ProviderAuthError, False),
            (ProviderRejectedError, False),
            (ProviderResponseError, False),
        ],
    )
    def test_retryable_defaults(
        self, cls: type[ProviderError], retryable: bool
    ) -> None:
        """Transport trouble and throttling are retryable; auth and rejection are not."""
        assert cls(message="x", provider="acme").retryable is retryable

    def test_retryable_can_be_overridden(self) -> None:
        """A vendor hint may override the class default."""
        error = ProviderUnavailableError(message="x", provider="acme", retryable=False)
        assert error.retryable is False

    def test_rate_limit_retry_after(self) -> None:
        """``retry_after`` defaults to ``None`` and keeps the vendor's hint."""
        assert ProviderRateLimitedError(message="x", provider="a").retry_after is None
        error = ProviderRateLimitedError(
            message="x", provider="a", retry_after=2.5, status_code=429, request_id="r1"
        )
        assert (error.retry_after, error.status_code, error.request_id) == (
            2.5,
            429,
            "r1",
        )


class TestSessionErrors:
    def test_fields(self) -> None:
        """Session errors carry the session id and, where relevant, step or version."""
        assert SessionNotFoundError(message="x", session_id="s9").session_id == "s9"
        assert (
            ConcurrentUpdateError(
                message="x", session_id="s", expected_version=4
            ).expected_version
            == 4
        )
        assert (
            StepNotFoundError(message="x", session_id="s", step_id="a").step_id == "a"
        )
        assert StepNotWaitingError(
            message="x", session_id="s", step_id="b"
        ).step_id == ("b")

    def test_audit_index(self) -> None:
        """An audit integrity error points at the first bad event."""
        assert AuditIntegrityError(message="x", index=3).index == 3


class TestPolicyProblem:
    def test_str_with_source(self) -> None:
        """With a source file, the problem reads ``source: path: message``."""
        problem = PolicyProblem(
            path="steps[2].when", message="unknown step 'sms'", source="loan.yaml"
        )
        assert str(problem) == "loan.yaml: steps[2].when: unknown step 'sms'"

    def test_str_without_source(self) -> None:
        """Without a source, the problem reads ``path: message``."""
        assert str(PolicyProblem(path="rules[0]", message="empty")) == "rules[0]: empty"

    def test_is_a_comparable_value(self) -> None:
        """Problems with the same fields are equal and hashable."""
        first = PolicyProblem(path="p", message="m")
        assert first == PolicyProblem(path="p", message="m")
        assert len({first, PolicyProblem(path="p", message="m")}) == 1


class TestPolicyError:
    def test_str_without_problems_is_the_message(self) -> None:
        """With no problems, ``str()`` is just the message."""
        error = PolicyError(message="policy is invalid")
        assert error.problems == ()
        assert str(error) == "policy is invalid"

    def test_str_lists_every_problem_indented(self) -> None:
        """Each problem follows the message on its own indented line, with its source."""
        error = PolicyError(
            message="policy loan.yaml has 2 problems",
            problems=(
                PolicyProblem(
                    path="steps[0].channel", message="unknown", source="loan.yaml"
                ),
                PolicyProblem(path="rules[1].when", message="syntax error"),
            ),
        )
        assert str(error).splitlines() == [
            "policy loan.yaml has 2 problems",
            "  loan.yaml: steps[0].channel: unknown",
            "  rules[1].when: syntax error",
        ]

    def test_is_a_configuration_error(self) -> None:
        """A policy error is caught as a configuration error."""
        with pytest.raises(ConfigurationError):
            raise PolicyError(message="bad")

    def test_pickle_keeps_problems(self) -> None:
        """A pickled policy error keeps its problems and its text."""
        error = PolicyError(
            message="bad", problems=(PolicyProblem(path="p", message="m", source="f"),)
        )
        restored = pickle.loads(pickle.dumps(error))  # noqa: S301
        assert restored.problems == error.problems
        assert str(restored) == str(error)

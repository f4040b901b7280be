"""The one error hierarchy of multiverify.

A failed verification (a wrong code, a bureau mismatch) is a
[`ChannelResult`][multiverify.ChannelResult], never an exception. Exceptions
are for wiring mistakes, bad input, vendor trouble and session conflicts::

    MultiverifyError
    ├── ConfigurationError            bad wiring, raised at construction
    │   └── PolicyError               a policy that does not validate (.problems)
    ├── InvalidInputError             bad applicant data or payload (.field)
    │   ├── PhoneNumberRefusedError   a number the SMS controls refuse (.reason), before any send
    │   └── DatasetError              a recorded-sessions or labels file that cannot be read (.source .line)
    ├── QuotaExceededError            an abuse or cost limit refused a send (.quota .retry_at)
    ├── PullNotPermittedError         a credit pull without a permissible purpose or consent (.reason .provider)
    ├── ProviderError                 .provider .status_code .code .request_id .retryable .uncertain
    │   ├── ProviderUnavailableError  transport error, timeout, 5xx: retryable
    │   ├── ProviderRateLimitedError  429, .retry_after: retryable
    │   ├── ProviderAuthError         401/403: never retried
    │   ├── ProviderRejectedError     other 4xx: never retried
    │   │   └── ProviderNumberRejectedError  the vendor refused the destination number
    │   └── ProviderResponseError     an answer missing or mangling documented fields
    ├── StoreUnavailableError         the session store cannot be reached: retry
    ├── WebhookError                  a vendor callback that cannot be applied (.vendor)
    │   ├── WebhookSignatureError     unsigned, forged or stale: rejected, never applied
    │   └── WebhookFormatError        malformed or of an unknown kind
    ├── SessionError                  .session_id
    │   ├── SessionNotFoundError
    │   ├── SessionFinishedError      input for a session that has a verdict
    │   ├── ConcurrentUpdateError     another writer saved first (compare-and-set)
    │   ├── StepNotFoundError         .step_id
    │   ├── StepNotWaitingError       input for a step that is not waiting (.step_id)
    │   ├── NotInReviewError          a review call for a session that does not wait for one
    │   └── ReviewClaimedError        another reviewer holds the case (.claimed_by .claimed_until)
    └── AuditIntegrityError           a tampered audit trail (.index)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "AuditIntegrityError",
    "ConcurrentUpdateError",
    "ConfigurationError",
    "DatasetError",
    "InvalidInputError",
    "MultiverifyError",
    "NotInReviewError",
    "PhoneNumberRefusedError",
    "PolicyError",
    "PolicyProblem",
    "ProviderAuthError",
    "ProviderError",
    "ProviderNumberRejectedError",
    "ProviderRateLimitedError",
    "ProviderRejectedError",
    "ProviderResponseError",
    "ProviderUnavailableError",
    "PullNotPermittedError",
    "QuotaExceededError",
    "ReviewClaimedError",
    "SessionError",
    "SessionFinishedError",
    "SessionNotFoundError",
    "StepNotFoundError",
    "StepNotWaitingError",
    "StoreUnavailableError",
    "WebhookError",
    "WebhookFormatError",
    "WebhookSignatureError",
]


@attrs.define(auto_exc=True, kw_only=True)
class MultiverifyError(Exception):
    """Base class of every error the SDK raises."""

    message: str

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # attrs hands every field to Exception.__init__ positionally, but the
        # fields are keyword-only, so the default reduce could not rebuild the
        # error (pickle, copy, process pools): rebuild it from its fields.
        return _rebuild, (type(self), attrs.asdict(self, recurse=False))


def _rebuild(cls: type[MultiverifyError], fields: dict[str, Any]) -> MultiverifyError:
    return cls(**fields)


@attrs.define(auto_exc=True, kw_only=True)
class ConfigurationError(MultiverifyError):
    """The SDK was wired wrongly: raised at construction, never mid-session."""


@attrs.frozen(kw_only=True)
class PolicyProblem:
    """One located mistake in a policy.

    Attributes:
        path: where the mistake is, such as ``steps[2].when``.
        message: what is wrong.
        source: the file the policy came from, when it came from one.
    """

    path: str
    message: str
    source: str | None = None

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.path}: {self.message}"


@attrs.define(auto_exc=True, kw_only=True)
class PolicyError(ConfigurationError):
    """A policy failed validation; ``problems`` lists every located mistake."""

    problems: tuple[PolicyProblem, ...] = ()

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        return f"{self.message}\n{lines}"


@attrs.define(auto_exc=True, kw_only=True)
class InvalidInputError(MultiverifyError):
    """Input from the app or the applicant was invalid; ``field`` names it."""

    field: str


@attrs.define(auto_exc=True, kw_only=True)
class DatasetError(InvalidInputError):
    """A recorded-sessions or labels file that cannot be read.

    ``source`` is the file, ``line`` the line the problem sits on (from 1;
    0 when it belongs to the whole file) and ``field`` the part of the record
    that is wrong (empty when the whole line is).
    """

    source: str
    line: int


@attrs.define(auto_exc=True, kw_only=True)
class PhoneNumberRefusedError(InvalidInputError):
    """The SMS controls refuse a destination number; raised before any vendor is called.

    Attributes:
        reason: ``invalid``, ``not_mobile``, ``country_not_allowed`` or
            ``premium_rate``.
    """

    reason: str


@attrs.define(auto_exc=True, kw_only=True)
class QuotaExceededError(MultiverifyError):
    """An abuse or cost limit refused a send; nothing was sent.

    Attributes:
        quota: which limit, such as ``phone``, ``client_ip``, ``daily_spend``,
            ``resend_cooldown`` or ``max_sends``.
        retry_at: when the same request would fit again, when known.
    """

    quota: str
    retry_at: datetime | None = None


@attrs.define(auto_exc=True, kw_only=True)
class PullNotPermittedError(MultiverifyError):
    """A credit-bureau pull was refused before any request left the process.

    Attributes:
        reason: ``no_purpose`` (neither the step nor the channel names a
            permissible purpose), ``no_consent`` (the applicant carries no
            consent record for bureau pulls), ``consent_expired`` or
            ``purpose_not_consented`` (the consent covers other purposes), or
            ``purpose_not_supported`` (the bureau has no code for it).
        purpose: the permissible purpose asked for, when there was one.
        provider: the bureau that refused (``purpose_not_supported``:
            another may take over), or ``None`` when the channel's purpose
            and consent guard refused, which every bureau would meet alike:
            the step then ends in error without trying its next provider.
    """

    reason: str
    purpose: str | None = None
    provider: str | None = None


@attrs.define(auto_exc=True, kw_only=True)
class ProviderError(MultiverifyError):
    """A vendor call failed.

    Attributes:
        provider: the vendor's name, such as ``twilio``.
        status_code: the HTTP status, when there was a response.
        code: the vendor's own error code, such as ``60200`` or
            ``isv.MOBILE_NUMBER_ILLEGAL``, when it gave one.
        request_id: the vendor's request id, for its support desk.
        retryable: whether repeating the same request may succeed.
        uncertain: whether the request may have taken effect although it
            failed (a timeout after it was sent, a 5xx): repeating a send
            may repeat its effect, so it is reconciled first.
    """

    provider: str
    status_code: int | None = None
    code: str | None = None
    request_id: str | None = None
    retryable: bool = False
    uncertain: bool = False


@attrs.define(auto_exc=True, kw_only=True)
class ProviderUnavailableError(ProviderError):
    """Transport error, timeout or 5xx: worth retrying."""

    retryable: bool = True


@attrs.define(auto_exc=True, kw_only=True)
class ProviderRateLimitedError(ProviderError):
    """The vendor throttled us; ``retry_after`` is its hint in seconds."""

    retryable: bool = True
    retry_after: float | None = None


@attrs.define(auto_exc=True, kw_only=True)
class ProviderAuthError(ProviderError):
    """Credentials were refused (401/403): never retried."""


@attrs.define(auto_exc=True, kw_only=True)
class ProviderRejectedError(ProviderError):
    """The vendor refused the request for good (other 4xx): never retried."""


@attrs.define(auto_exc=True, kw_only=True)
class ProviderNumberRejectedError(ProviderRejectedError):
    """The vendor refused the destination number (invalid, unreachable, opted out).

    Never retried, and no other vendor is tried for it.
    """


@attrs.define(auto_exc=True, kw_only=True)
class ProviderResponseError(ProviderError):
    """The vendor answered, but not as documented: a field is missing or malformed.

    Never retried: the same request would get the same answer. ``field``
    names what was wrong, such as ``verification.url``.
    """

    field: str = ""


@attrs.define(auto_exc=True, kw_only=True)
class StoreUnavailableError(MultiverifyError):
    """The session store could not be reached (server down, connection refused).

    Nothing was written by the failed call; repeating it later may succeed.
    """

    store: str


@attrs.define(auto_exc=True, kw_only=True)
class WebhookError(MultiverifyError):
    """A vendor callback was refused; nothing was applied.

    Attributes:
        vendor: which vendor's route received it, such as ``twilio``.
    """

    vendor: str


@attrs.define(auto_exc=True, kw_only=True)
class WebhookSignatureError(WebhookError):
    """The callback is unsigned, its signature does not match, or it is too old."""


@attrs.define(auto_exc=True, kw_only=True)
class WebhookFormatError(WebhookError):
    """The callback is signed but malformed, or of a kind the handler does not know."""


@attrs.define(auto_exc=True, kw_only=True)
class SessionError(MultiverifyError):
    """Something is wrong with a session or with input for it."""

    session_id: str


@attrs.define(auto_exc=True, kw_only=True)
class SessionNotFoundError(SessionError):
    """No session has this id."""


@attrs.define(auto_exc=True, kw_only=True)
class SessionFinishedError(SessionError):
    """The session already has a verdict or was cancelled."""


@attrs.define(auto_exc=True, kw_only=True)
class ConcurrentUpdateError(SessionError):
    """Another writer saved the session first; reload and try again."""

    expected_version: int


@attrs.define(auto_exc=True, kw_only=True)
class StepNotFoundError(SessionError):
    """The session's policy has no step with this id."""

    step_id: str


@attrs.define(auto_exc=True, kw_only=True)
class StepNotWaitingError(SessionError):
    """The step is not waiting for input (not started, or already finished)."""

    step_id: str


@attrs.define(auto_exc=True, kw_only=True)
class NotInReviewError(SessionError):
    """The session does not wait for a review decision (yet, or any more).

    It is still running its steps, or it waits for evidence a reviewer asked
    for; a session with its final verdict raises `SessionFinishedError`.
    """


@attrs.define(auto_exc=True, kw_only=True)
class ReviewClaimedError(SessionError):
    """Another reviewer's claim holds the case; nothing was changed.

    Attributes:
        claimed_by: who holds it (``None`` when the claim is no longer
            the caller's and nobody else's either: claim it again).
        claimed_until: when that claim lapses.
    """

    claimed_by: str | None = None
    claimed_until: datetime | None = None


@attrs.define(auto_exc=True, kw_only=True)
class AuditIntegrityError(MultiverifyError):
    """An audit trail does not verify; ``index`` is the first bad event."""

    index: int

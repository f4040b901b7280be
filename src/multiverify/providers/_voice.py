"""What every voice vendor offers the phone-call channel: place, look up and end calls.

The channel speaks in vendor-neutral values: a [`CallRequest`][multiverify.providers.CallRequest]
to place a call, the [`VoiceInstruction`][multiverify.providers.VoiceInstruction]
for what to say and collect next (rendered as TwiML for Twilio, NCCO for
Vonage), and a [`CallRoute`][multiverify.providers.CallRoute] that every
callback URL carries so that a callback finds its session, step, attempt and
call again.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from ..exceptions import WebhookFormatError, WebhookSignatureError

__all__ = [
    "AnsweredBy",
    "CallInfo",
    "CallRequest",
    "CallRoute",
    "CallStatus",
    "Gather",
    "VoiceInstruction",
    "VoiceProvider",
    "callback_url",
]


class CallStatus(enum.StrEnum):
    """A call's progress, in the vendors' common terms."""

    QUEUED = "queued"
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def final(self) -> bool:
        """Whether the call is over."""
        return self in _FINAL


_FINAL = frozenset(
    {
        CallStatus.COMPLETED,
        CallStatus.BUSY,
        CallStatus.NO_ANSWER,
        CallStatus.FAILED,
        CallStatus.CANCELED,
    }
)


class AnsweredBy(enum.StrEnum):
    """Who answered, per answering-machine detection."""

    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"


@attrs.frozen(kw_only=True)
class CallRoute:
    """Where a call's callbacks belong: session, step, attempt and the call's number in it."""

    session_id: str
    step_id: str
    attempt: int
    call: int

    def query(self) -> dict[str, str]:
        """The route as URL query parameters."""
        return {
            "session_id": self.session_id,
            "step_id": self.step_id,
            "attempt": str(self.attempt),
            "call": str(self.call),
        }

    @classmethod
    def from_query(cls, params: Mapping[str, str], *, vendor: str) -> CallRoute:
        """Read a route back from a callback URL's query.

        Raises:
            WebhookFormatError: a parameter is missing or not a number.
        """
        try:
            return cls(
                session_id=params["session_id"],
                step_id=params["step_id"],
                attempt=int(params["attempt"]),
                call=int(params["call"]),
            )
        except (KeyError, ValueError) as exc:
            raise WebhookFormatError(
                message=f"{vendor} callback URL carries no valid call route ({exc})",
                vendor=vendor,
            ) from None


def _route_signature(key: str, pairs: Sequence[tuple[str, str]]) -> str:
    digest = hmac.new(key.encode(), urlencode(pairs).encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def callback_url(
    base: str,
    route: CallRoute,
    event: str,
    *,
    turn: int | None = None,
    key: str | None = None,
) -> str:
    """A callback URL for one call: ``base`` with the route, the event and the turn.

    With ``key`` the query is signed (``sig``, HMAC-SHA256): for vendors that
    sign the body but not the URL, so the route cannot be altered.
    """
    parts = urlsplit(base)
    pairs = [*parse_qsl(parts.query), *route.query().items(), ("event", event)]
    if turn is not None:
        pairs.append(("turn", str(turn)))
    if key is not None:
        pairs.append(("sig", _route_signature(key, pairs)))
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def verified_query(url: str, key: str, *, vendor: str) -> dict[str, str]:
    """The query of a URL made by [`callback_url`][multiverify.providers.callback_url] with ``key``.

    Raises:
        WebhookSignatureError: no ``sig``, or it does not match.
    """
    pairs = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    signed = [(name, value) for name, value in pairs if name != "sig"]
    given = [value for name, value in pairs if name == "sig"]
    # Compared as bytes: a query may hold any character, and compare_digest
    # refuses non-ASCII strings.
    if len(given) != 1 or not hmac.compare_digest(
        given[0].encode(), _route_signature(key, signed).encode()
    ):
        raise WebhookSignatureError(
            message=f"{vendor} callback URL is not one we issued (bad sig)",
            vendor=vendor,
        )
    return dict(signed)


def _hints(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _lines(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class Gather:
    """What to collect after speaking.

    Attributes:
        input: ``dtmf``, ``speech`` or ``dtmf speech``.
        num_digits: how many keys end the input (``None``: ``#`` ends it).
        timeout: seconds to wait for input.
        hints: words the speech recogniser should expect.
    """

    input: str = "dtmf"
    num_digits: int | None = None
    timeout: float = 8.0
    hints: tuple[str, ...] = attrs.field(default=(), converter=_hints)


@attrs.frozen(kw_only=True)
class VoiceInstruction:
    """What the call does next: speak, then collect an answer or hang up.

    Attributes:
        turn: counts instructions within a call; the answer's callback
            carries it, so a late or repeated answer is recognised.
        language: the locale spoken, such as ``zh-CN``.
        say: what is said, in order.
        gather: what to collect afterwards, or ``None``.
        hangup: end the call after speaking.
        record: start recording (the first instruction of a recorded call).
    """

    turn: int
    language: str
    say: tuple[str, ...] = attrs.field(default=(), converter=_lines, repr=False)
    gather: Gather | None = None
    hangup: bool = False
    record: bool = False


@attrs.frozen(kw_only=True)
class CallRequest:
    """A call to place.

    Attributes:
        to: the number, E.164.
        route: where its callbacks belong.
        ring_timeout: seconds to let it ring.
        time_limit: the longest the call may last, in seconds.
        machine_detection: detect answering machines in the background.
        record: record the call.
    """

    to: str = attrs.field(repr=False)
    route: CallRoute
    ring_timeout: float = 30.0
    time_limit: float = 600.0
    machine_detection: bool = True
    record: bool = False


@attrs.frozen(kw_only=True)
class CallInfo:
    """A call as the vendor reports it.

    Attributes:
        call_id: the vendor's id (Twilio ``CA...``, Vonage uuid).
        status: its progress.
        provider: the vendor's name.
        to: the number called, E.164, when reported.
        answered_by: answering-machine detection's finding, when there is one.
        created_at: when the vendor created it, when reported.
        duration: seconds it lasted, once over.
    """

    call_id: str
    status: CallStatus
    provider: str
    to: str | None = attrs.field(default=None, repr=False)
    answered_by: AnsweredBy | None = None
    created_at: datetime | None = None
    duration: float | None = None


@runtime_checkable
class VoiceProvider(Protocol):
    """**Protocol**: a voice platform that places scripted calls.

    Placing a call is a side effect that must not happen twice: the
    channel looks calls up with [`find_calls`][multiverify.providers.VoiceProvider.find_calls]
    before it places one again after an uncertain outcome. Raise
    [`ProviderError`][multiverify.exceptions.ProviderError] subclasses.
    """

    @property
    def name(self) -> str:
        """The vendor's name, as policies list it (``twilio``)."""
        ...

    async def place_call(self, request: CallRequest, /) -> CallInfo:
        """Place a call; its callbacks carry ``request.route``."""
        ...

    async def get_call(self, call_id: str, /) -> CallInfo:
        """The call's current state."""
        ...

    async def find_calls(self, *, to: str, since: datetime) -> list[CallInfo]:
        """Calls to ``to`` created at or after ``since``, newest first."""
        ...

    async def hang_up(
        self, call_id: str, /, *, goodbye: VoiceInstruction | None = None
    ) -> None:
        """End the call if it is still going (best effort).

        A call in progress first hears ``goodbye`` when it is given (the
        channel ends a call early: its session was cancelled or decided).
        """
        ...

"""A sandbox video vendor: Veriff's API v1 and signed webhooks, in memory, behaving as a persona would.

[`SandboxVideoVendor`][multiverify.sandbox.SandboxVideoVendor] is an httpx
transport that answers ``POST /v1/sessions`` and
``GET /v1/sessions/{id}/decision`` as Veriff does (checking ``X-AUTH-CLIENT``
and ``X-HMAC-SIGNATURE``), so the real [`Veriff`][multiverify.providers.Veriff]
provider and [`VideoSignChannel`][multiverify.channels.VideoSignChannel]
run against it unchanged. When the applicant opens a session's link
([`open`][multiverify.sandbox.SandboxVideoVendor.open]) it plays one of the
video personas and sends HMAC-signed event and decision webhooks to the
verifier it is connected to, through the real
[`VeriffWebhooks`][multiverify.webhooks.VeriffWebhooks] handler. An approval
names the holder of the document shown (``verification.person``): the
applicant given to ``open``, or, for the ``wrong-holder`` persona, somebody
else (a fraudster showing their own ID and face under a victim's name).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

import attrs
import httpx

from .._clock import Clock, SystemClock
from ..channels import VideoSignChannel
from ..exceptions import ConfigurationError, SessionError
from ..providers import Veriff, veriff_signature
from ..webhooks import VeriffWebhooks, WebhookRequest

if TYPE_CHECKING:
    from .._applicant import Applicant
    from .._verifier import Verifier

__all__ = [
    "SandboxVideoSignChannel",
    "SandboxVideoVendor",
    "video_personas",
]

_BASE_URL = "https://veriff.sandbox.multiverify.invalid"
_LINKS = "https://alchemy.sandbox.multiverify.invalid/v/"
_WEBHOOK_URL = "https://app.sandbox.multiverify.invalid/webhooks/veriff"
_NAMESPACE = uuid.UUID("0b7c8f52-8f1d-4a57-9c61-5d0e4b2a9e11")


@attrs.frozen(kw_only=True)
class _Step:
    """One thing the applicant's session sends: a progress event or a decision."""

    delay: float
    action: str | None = None
    status: str | None = None
    code: int = 0
    reason_code: int | None = None
    reason: str | None = None
    other_holder: bool = False
    """The document shown is somebody else's, not the applicant's."""


def _decision(
    delay: float,
    status: str,
    code: int,
    reason_code: int | None = None,
    reason: str | None = None,
) -> _Step:
    return _Step(
        delay=delay, status=status, code=code, reason_code=reason_code, reason=reason
    )


_STARTED = _Step(delay=0.2, action="started", code=7001)
_SUBMITTED = _Step(delay=0.2, action="submitted", code=7002)

_VIDEO_PERSONAS: Mapping[str, tuple[_Step, ...]] = {
    "passes": (_STARTED, _SUBMITTED, _decision(0.3, "approved", 9001)),
    "fails-liveness": (
        _STARTED,
        _SUBMITTED,
        _decision(0.3, "declined", 9102, 504, "Attempted deceit, device screen used"),
    ),
    "face-mismatch": (
        _STARTED,
        _SUBMITTED,
        _decision(
            0.3,
            "declined",
            9102,
            103,
            "Person showing the document does not appear to match document photo",
        ),
    ),
    "resubmission": (
        _STARTED,
        _SUBMITTED,
        _decision(0.3, "resubmission_requested", 9103, 202, "Face not clearly visible"),
        _SUBMITTED,
        _decision(0.3, "approved", 9001),
    ),
    "abandons": (_STARTED, _decision(0.5, "abandoned", 9104)),
    "wrong-holder": (
        _STARTED,
        _SUBMITTED,
        _Step(delay=0.3, status="approved", code=9001, other_holder=True),
    ),
}
# How the applicant behaves in the video session, by persona: what the vendor reports, in order.


# Whose document the wrong-holder persona shows: a made-up person, never an applicant's.
_OTHER_PERSON: Mapping[str, Any] = {
    "firstName": "Ming",
    "lastName": "Sun",
    "fullName": "Sun Ming",
    "idNumber": "650102198807014417",
    "dateOfBirth": "1988-07-01",
}


def video_personas() -> tuple[str, ...]:
    """The video personas: ``passes``, ``fails-liveness``, ``face-mismatch``, ``resubmission``, ``abandons``, ``wrong-holder``."""
    return tuple(_VIDEO_PERSONAS)


def _person(holder: Applicant) -> dict[str, Any]:
    """``verification.person`` as Veriff reads it off ``holder``'s ID card (family name first)."""
    family, _, given = holder.name.partition(" ")
    return {
        "firstName": given or None,
        "lastName": family,
        "fullName": holder.name,
        "idNumber": holder.national_id,
        "dateOfBirth": holder.date_of_birth.isoformat(),
    }


def _document(person: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if person is None:
        return None
    return {"number": person["idNumber"], "type": "ID_CARD", "country": "CN"}


class SandboxVideoSignChannel(VideoSignChannel):
    """A [`VideoSignChannel`][multiverify.channels.VideoSignChannel] on the sandbox vendor (real channel, sandbox vendor)."""

    sandbox_vendor: ClassVar[bool] = True


@attrs.define
class _Session:
    session_id: str
    url: str
    vendor_data: str
    attempts: int = 0
    decision: dict[str, Any] | None = None
    holder: dict[str, Any] | None = None


def _answer(status: int, body: Mapping[str, Any]) -> httpx.Response:
    return httpx.Response(status, json=dict(body))


class SandboxVideoVendor(httpx.AsyncBaseTransport):
    """Veriff in memory: sessions, decisions, and signed webhooks to a connected verifier.

    Args:
        persona: the video persona every session plays, one of
            [`video_personas`][multiverify.sandbox.video_personas].
        speed: scales the persona's nominal delays; ``0`` sends at once.
        clock: the clock the delays run on.
        api_key: the integration's API key.
        shared_secret: the integration's shared secret.

    Raises:
        ConfigurationError: an unknown persona.
        ValueError: a negative speed.
    """

    API_KEY: ClassVar[str] = "sandbox-api-key"
    SHARED_SECRET: ClassVar[str] = "sandbox-shared-secret"  # noqa: S105 - a sandbox's published secret

    def __init__(
        self,
        *,
        persona: str = "passes",
        speed: float = 1.0,
        clock: Clock | None = None,
        api_key: str = API_KEY,
        shared_secret: str = SHARED_SECRET,
    ) -> None:
        if persona not in _VIDEO_PERSONAS:
            raise ConfigurationError(
                message=f"no video persona named {persona!r} "
                f"(known: {', '.join(_VIDEO_PERSONAS)})"
            )
        if speed < 0:
            raise ValueError(f"speed must not be negative: {speed!r}")
        self.persona = persona
        self._speed = speed
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._api_key = api_key
        self._secret = shared_secret
        self._sessions: dict[str, _Session] = {}
        self._by_url: dict[str, _Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._verifier: Verifier | None = None
        self._client = httpx.AsyncClient(transport=self, base_url=_BASE_URL)
        self.webhooks = VeriffWebhooks(
            shared_secret, api_key=api_key, provider="veriff", media_base=_BASE_URL
        )
        """The handler the vendor's webhooks go through."""
        self.delivered: list[WebhookRequest] = []
        """Every webhook sent, in order."""

    def __repr__(self) -> str:
        return (
            f"<multiverify.sandbox.SandboxVideoVendor({self.persona}, "
            f"sessions={len(self._sessions)})>"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def provider(self) -> Veriff:
        """A [`Veriff`][multiverify.providers.Veriff] provider speaking to this vendor."""
        return Veriff(
            api_key=self._api_key,
            shared_secret=self._secret,
            base_url=_BASE_URL,
            client=self._client,
        )

    def channel(self, **settings: Any) -> SandboxVideoSignChannel:
        """The real video channel on this vendor; ``settings`` go to [`VideoSignChannel`][multiverify.channels.VideoSignChannel]."""
        return SandboxVideoSignChannel([self.provider()], **settings)

    def connect(self, verifier: Verifier) -> None:
        """Send webhooks to ``verifier`` (as an app's webhook route would)."""
        self._verifier = verifier

    async def open(self, url: str, *, holder: Applicant | None = None) -> None:
        """The applicant opens a session's link: the persona's session plays out in the background.

        Args:
            url: the session's link.
            holder: whose ID document the applicant shows (normally the
                applicant); an approval reports this person as the
                document's holder. ``None``: Veriff reads no person data.

        Raises:
            ConfigurationError: no session has this link.
        """
        session = self._by_url.get(url)
        if session is None:
            raise ConfigurationError(
                message=f"the sandbox vendor has no session at {url}"
            )
        session.holder = None if holder is None else _person(holder)
        task = asyncio.ensure_future(self._play(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Wait until every opened session has sent all it will send (sleeps on a FakeClock excepted)."""
        while busy := {task for task in self._tasks if not task.done()}:
            _ = await asyncio.wait(busy, timeout=0.01)
            sleeping = getattr(self._clock, "sleeping_tasks", None)
            if sleeping is not None and busy <= sleeping():
                return

    async def aclose(self) -> None:
        """Stop sessions in progress and close the provider's HTTP client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    # -- Veriff's API --------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer one API request as Veriff would."""
        body = await request.aread()
        if request.headers.get("x-auth-client") != self._api_key:
            return _answer(
                401,
                {"status": "fail", "code": 1801, "message": "Invalid X-AUTH-CLIENT"},
            )
        path = request.url.path
        if request.method == "POST" and path == "/v1/sessions":
            return self._create(body, request.headers.get("x-hmac-signature"))
        prefix, _, rest = path.partition("/v1/sessions/")
        session_id, _, tail = rest.partition("/")
        if request.method == "GET" and not prefix and session_id and tail == "decision":
            return self._decision(session_id, request.headers.get("x-hmac-signature"))
        return _answer(404, {"status": "fail", "code": 1404, "message": "Not found"})

    def _signed(self, message: bytes, signature: str | None) -> bool:
        return signature is not None and signature.lower() == veriff_signature(
            self._secret, message
        )

    def _create(self, body: bytes, signature: str | None) -> httpx.Response:
        if not self._signed(body, signature):
            return _answer(
                401,
                {"status": "fail", "code": 1812, "message": "Signature is not valid"},
            )
        try:
            verification = json.loads(body)["verification"]
            vendor_data = str(verification["vendorData"])
        except (ValueError, KeyError, TypeError):
            return _answer(
                400,
                {
                    "status": "fail",
                    "code": 1102,
                    "message": "Mandatory parameters are missing",
                },
            )
        session_id = str(uuid.uuid5(_NAMESPACE, f"{vendor_data}#{len(self._sessions)}"))
        session = _Session(
            session_id=session_id, url=_LINKS + session_id, vendor_data=vendor_data
        )
        self._sessions[session_id] = session
        self._by_url[session.url] = session
        return _answer(
            201,
            {
                "status": "success",
                "verification": {
                    "id": session_id,
                    "url": session.url,
                    "vendorData": vendor_data,
                    "host": _LINKS.removesuffix("/v/"),
                    "status": "created",
                    "sessionToken": uuid.uuid5(_NAMESPACE, session_id).hex,
                },
            },
        )

    def _decision(self, session_id: str, signature: str | None) -> httpx.Response:
        if not self._signed(session_id.encode(), signature):
            return _answer(
                401,
                {"status": "fail", "code": 1812, "message": "Signature is not valid"},
            )
        session = self._sessions.get(session_id)
        if session is None:
            return _answer(
                404, {"status": "fail", "code": 1404, "message": "Not found"}
            )
        return _answer(200, {"status": "success", "verification": session.decision})

    # -- the applicant's session -----------------------------------------------------

    async def _play(self, session: _Session) -> None:
        for step in _VIDEO_PERSONAS[self.persona]:
            await self._clock.sleep(step.delay * self._speed)
            if step.action is not None:
                if step.action == "submitted":
                    session.attempts += 1
                await self._send(
                    {
                        "id": session.session_id,
                        "attemptId": self._attempt(session),
                        "feature": "selfid",
                        "code": step.code,
                        "action": step.action,
                        "vendorData": session.vendor_data,
                    }
                )
                continue
            person = dict(_OTHER_PERSON) if step.other_holder else session.holder
            session.decision = {
                "id": session.session_id,
                "attemptId": self._attempt(session),
                "vendorData": session.vendor_data,
                "status": step.status,
                "code": step.code,
                "reasonCode": step.reason_code,
                "reason": step.reason,
                "decisionTime": self._clock.now().isoformat(),
                "person": person,
                "document": _document(person),
            }
            await self._send({"status": "success", "verification": session.decision})

    @staticmethod
    def _attempt(session: _Session) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"{session.session_id}/{session.attempts}"))

    async def _send(self, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        request = WebhookRequest(
            method="POST",
            url=_WEBHOOK_URL,
            headers={
                "Content-Type": "application/json",
                "X-AUTH-CLIENT": self._api_key,
                "X-HMAC-SIGNATURE": veriff_signature(self._secret, body),
            },
            body=body,
            received_at=self._clock.now(),
        )
        self.delivered.append(request)
        if self._verifier is None:
            return
        for event in await self.webhooks.parse(request):
            try:
                _ = await self._verifier.handle_event(event)
            except SessionError:
                continue  # the step or session moved on: a late delivery, refused

"""A sandbox voice vendor: Twilio's and Vonage's voice APIs simulated at the HTTP level.

[`SandboxVoice`][multiverify.sandbox.SandboxVoice] is an httpx transport
(mount it with ``httpx.AsyncClient(transport=...)``). It answers the Calls
API (Twilio) or ``/v1/calls`` (Vonage) as the vendor would, then plays the
call: it rings the applicant's simulated phone, which behaves as a
[`VoicePersona`][multiverify.sandbox.VoicePersona] does, and sends the
vendor's signed callbacks (``X-Twilio-Signature``, or a Vonage JWT with
``payload_hash``) through the real webhook handlers, following the TwiML or
NCCO they answer with. The phone listens to what is said, as a person
would: it recognises the questions of the built-in script by their words.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode
from xml.etree import ElementTree as ET

import attrs
import httpx
import jwt

from .._clock import Clock, SystemClock
from ..exceptions import SessionError, StepNotWaitingError, WebhookError
from ..webhooks import (
    TwilioSignature,
    TwilioVoiceWebhook,
    VonageSignature,
    VonageVoiceWebhook,
    WebhookRequest,
    WebhookResponse,
    twilio_signature,
)

if TYPE_CHECKING:
    from .._applicant import Applicant
    from .._verifier import Verifier

__all__ = ["VOICE_PERSONAS", "SandboxVoice", "VoicePersona"]

TWILIO_TOKEN = "sandbox-twilio-auth-token"  # noqa: S105 - the sandbox's own, public
TWILIO_ACCOUNT = "AC" + "0" * 32
VONAGE_SECRET = "sandbox-vonage-signature-secret-0123456789"  # noqa: S105 - likewise
VONAGE_URL_KEY = "sandbox-vonage-callback-key"
CALLBACK_URL = "https://app.sandbox.multiverify.invalid/webhooks/voice"


@attrs.frozen(kw_only=True)
class VoicePersona:
    """How the simulated phone's owner behaves on a confirmation call.

    Attributes:
        name: the persona's name.
        summary: one line on what they do.
        answers_from: the first call they pick up (``0``: never).
        machine: an answering machine picks up instead.
        wrong_identity: they give ID digits that are not the applicant's.
        coached: they admit someone told them what to say.
        declines: they deny having applied.
        delay: seconds they take to answer each question.
        slow_on: questions they take ``slow_delay`` seconds over instead.
        slow_delay: seconds they take over the ``slow_on`` questions.
        silent_on: questions they never answer (the keypad stays silent).
        garbage_first: they press a wrong key before each first answer.
        hangs_up_after: they hang up after this many answers.
        not_now: on this many answered calls they first say it is not a
            good time (the "not now" key of the opening question).
    """

    name: str
    summary: str
    answers_from: int = 1
    machine: bool = False
    wrong_identity: bool = False
    coached: bool = False
    declines: bool = False
    delay: float = 0.3
    slow_on: frozenset[str] = frozenset()
    slow_delay: float = 9.0
    silent_on: frozenset[str] = frozenset()
    garbage_first: bool = False
    hangs_up_after: int | None = None
    not_now: int = 0


VOICE_PERSONAS: Mapping[str, VoicePersona] = {
    persona.name: persona
    for persona in (
        VoicePersona(name="honest", summary="answers every question truthfully"),
        VoicePersona(
            name="late-pickup",
            summary="misses two calls, answers the third",
            answers_from=3,
        ),
        VoicePersona(name="unreachable", summary="never picks up", answers_from=0),
        VoicePersona(
            name="answering-machine",
            summary="an answering machine takes every call",
            machine=True,
        ),
        VoicePersona(
            name="fraudster",
            summary="does not know the applicant's ID number",
            wrong_identity=True,
        ),
        VoicePersona(
            name="hesitant",
            summary="fumbles the keys, takes long over the loan, evades its purpose",
            slow_on=frozenset({"birth_year", "intent"}),
            silent_on=frozenset({"purpose"}),
            garbage_first=True,
        ),
        VoicePersona(
            name="coached",
            summary="admits someone told them how to answer",
            coached=True,
        ),
        VoicePersona(
            name="busy-now",
            summary="asks to be called back later, then confirms",
            not_now=1,
        ),
    )
}
"""The shipped voice personas, by name."""

# What the built-in script asks, recognised by its words.
_QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("id", ("身份证", "national id")),
    ("birth_year", ("出生年份", "year of birth")),
    ("risk", ("其他人", "has anyone")),
    ("intent", ("借款金额", "applied to borrow")),
    ("purpose", ("用途", "loan for")),
    ("consent", ("继续请按", "to continue")),
)


def _question(text: str) -> str:
    lowered = text.lower()
    for name, words in _QUESTIONS:
        if any(word in lowered for word in words):
            return name
    return "other"


class SandboxVoice(httpx.AsyncBaseTransport):
    """A simulated Twilio or Vonage voice platform, and the applicant's phone behind it.

    Args:
        vendor: ``twilio`` or ``vonage`` (the wire format it speaks).
        applicant: whose phone it rings (their answers come from it).
        persona: how they behave.
        speed: scales every delay; ``0`` plays without waiting.
        clock: the time source for delays (the Verifier's, once connected).
    """

    def __init__(
        self,
        *,
        vendor: str,
        applicant: Applicant,
        persona: VoicePersona,
        speed: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        if vendor not in ("twilio", "vonage"):
            raise ValueError(f"vendor must be twilio or vonage, not {vendor!r}")
        self.vendor = vendor
        self.applicant = applicant
        self.persona = persona
        self.speed = speed
        self.clock: Clock = clock or SystemClock()
        self.calls: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.callbacks: list[tuple[WebhookRequest, WebhookResponse]] = []
        self._deliver: Callable[[WebhookRequest], Awaitable[WebhookResponse]] | None = (
            None
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._placed = itertools.count(1)
        self._talks = 0

    def __repr__(self) -> str:
        return f"<multiverify.sandbox.SandboxVoice({self.vendor}, persona={self.persona.name}, calls={len(self.calls)})>"

    # -- wiring -----------------------------------------------------------------

    def handler(self) -> TwilioVoiceWebhook | VonageVoiceWebhook:
        """The webhook handler the app would mount for this vendor."""
        if self.vendor == "twilio":
            return TwilioVoiceWebhook(TwilioSignature(TWILIO_TOKEN))
        return VonageVoiceWebhook(
            VonageSignature(VONAGE_SECRET, clock=self.clock),
            callback_key=VONAGE_URL_KEY,
        )

    def connect(self, verifier: Verifier) -> None:
        """Deliver callbacks to ``verifier`` (through the real webhook handler)."""
        self.clock = verifier.clock
        handler = self.handler()

        async def deliver(request: WebhookRequest) -> WebhookResponse:
            sessions = []
            for event in await handler.parse(request):
                try:
                    sessions.append(await verifier.handle_event(event))
                except SessionError:
                    # Unknown or finished session, or a step no longer waiting:
                    # dropped safely, as the webhook intake does.
                    sessions.append(None)
            return handler.respond(request, sessions)

        self._deliver = deliver

    async def wait_idle(self) -> None:
        """Wait until no simulated call is in progress (on a FakeClock, asleep counts as idle)."""
        sleeping = getattr(self.clock, "sleeping_tasks", None)
        while True:
            busy = {t for t in self._tasks if not t.done()}
            if sleeping is not None:
                busy -= sleeping()
            if not busy:
                return
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        """Stop every simulated call."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- the vendor's REST API ------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer one REST request as the vendor would."""
        await request.aread()
        self.requests.append(request)
        path = request.url.path
        if self.vendor == "twilio" and path.endswith("/Calls.json"):
            if request.method == "POST":
                return self._twilio_create(dict(parse_qsl(request.content.decode())))
            return httpx.Response(200, json={"calls": []})
        if self.vendor == "twilio" and "/Calls/" in path:
            sid = path.rsplit("/", 1)[-1].removesuffix(".json")
            call = self.calls.get(sid)
            if call is None:
                return httpx.Response(
                    404, json={"code": 20404, "message": "not found", "status": 404}
                )
            if request.method == "POST":
                call["hung_up"] = True
            return httpx.Response(200, json=self._twilio_resource(sid))
        if self.vendor == "vonage" and path == "/v1/calls" and request.method == "POST":
            return self._vonage_create(json.loads(request.content))
        if self.vendor == "vonage" and path == "/v1/calls":
            return httpx.Response(200, json={"_embedded": {"calls": []}})
        if self.vendor == "vonage" and path.startswith("/v1/calls/"):
            call_id = path.rsplit("/", 1)[-1]
            call = self.calls.get(call_id)
            if call is None:
                return httpx.Response(
                    404, json={"title": "Not found", "type": "about:blank"}
                )
            if request.method == "PUT":
                call["hung_up"] = True
                return httpx.Response(204)
            return httpx.Response(
                200,
                json={
                    "uuid": call_id,
                    "status": call["status"],
                    "to": {"number": self.applicant.phone[1:]},
                },
            )
        return httpx.Response(404, json={"message": "unknown endpoint"})

    def _twilio_resource(self, sid: str) -> dict[str, Any]:
        call = self.calls[sid]
        return {
            "sid": sid,
            "status": call["status"],
            "to": self.applicant.phone,
            "date_created": self.clock.now().strftime("%a, %d %b %Y %H:%M:%S +0000"),
        }

    def _twilio_create(self, form: Mapping[str, str]) -> httpx.Response:
        number = next(self._placed)
        sid = "CA" + hashlib.sha256(f"{form['Url']}:{number}".encode()).hexdigest()[:32]
        self.calls[sid] = {
            "status": "queued",
            "form": dict(form),
            "number": number,
            "hung_up": False,
        }
        self._spawn(self._twilio_call(sid, number, form))
        return httpx.Response(201, json=self._twilio_resource(sid))

    def _vonage_create(self, body: Mapping[str, Any]) -> httpx.Response:
        number = next(self._placed)
        call_id = str(
            uuidlib.UUID(
                bytes=hashlib.sha256(
                    f"{body['answer_url'][0]}:{number}".encode()
                ).digest()[:16]
            )
        )
        self.calls[call_id] = {
            "status": "started",
            "body": dict(body),
            "number": number,
            "hung_up": False,
        }
        self._spawn(self._vonage_call(call_id, number, body))
        return httpx.Response(
            201,
            json={
                "uuid": call_id,
                "status": "started",
                "direction": "outbound",
                "conversation_uuid": f"CON-{call_id}",
            },
        )

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pause(self, seconds: float) -> None:
        await self.clock.sleep(seconds * self.speed)

    # -- the simulated phone ------------------------------------------------------------

    def _answered(self) -> int:
        """Counts the calls the callee has talked on, from 1."""
        self._talks += 1
        return self._talks

    def _picks_up(self, number: int) -> bool:
        first = self.persona.answers_from
        return first > 0 and number >= first

    def _delay(self, text: str) -> float:
        slow = _question(text) in self.persona.slow_on
        return self.persona.slow_delay if slow else self.persona.delay

    def _reply(self, text: str, state: dict[str, Any]) -> str:
        """The keys the callee presses after hearing ``text``."""
        persona = self.persona
        question = _question(text)
        yes, no = "1", "2"  # the built-in script's keys
        answered = state.setdefault("answered", set())
        if question in persona.silent_on:
            return ""
        if persona.garbage_first and question not in answered:
            answered.add(question)
            return "9#9"
        if question == "id":
            last4 = self.applicant.national_id[-4:].upper().replace("X", "*")
            return "0000" if persona.wrong_identity and last4 != "0000" else last4
        if question == "birth_year":
            year = self.applicant.date_of_birth.year
            return str(year + 7) if persona.wrong_identity else str(year)
        if question == "intent":
            return no if persona.declines else yes
        if question == "risk":
            return yes if persona.coached else no
        if question == "consent" and state.get("call", 0) <= persona.not_now:
            return no
        return yes

    async def _answer(self, said: str, state: dict[str, Any]) -> str | None:
        """Think, then press keys for what was said; ``None``: they hang up instead."""
        limit = self.persona.hangs_up_after
        if limit is not None and state["replies"] >= limit:
            return None
        await self._pause(self._delay(said))
        state["replies"] += 1
        return self._reply(said, state)

    async def _callback(
        self, url: str, params: Mapping[str, str] | Mapping[str, Any]
    ) -> WebhookResponse:
        if self._deliver is None:
            raise RuntimeError("SandboxVoice is not connected to a Verifier")
        if self.vendor == "twilio":
            form = {k: str(v) for k, v in params.items()}
            body = urlencode(form).encode()
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, form.items()),
            }
        else:
            body = json.dumps(params, separators=(",", ":")).encode()
            token = jwt.encode(
                {
                    "iat": int(self.clock.now().timestamp()),
                    "jti": str(uuidlib.uuid4()),
                    "iss": "Vonage",
                    "payload_hash": hashlib.sha256(body).hexdigest(),
                },
                VONAGE_SECRET,
                algorithm="HS256",
            )
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
            }
        request = WebhookRequest(
            method="POST",
            url=url,
            headers=headers,
            body=body,
            received_at=self.clock.now(),
        )
        try:
            response = await self._deliver(request)
        except WebhookError:
            response = WebhookResponse(status=403)
        except StepNotWaitingError:  # pragma: no cover - deliver drops these
            response = WebhookResponse(status=409)
        self.callbacks.append((request, response))
        return response

    async def _twilio_call(
        self, sid: str, number: int, form: Mapping[str, str]
    ) -> None:
        call = self.calls[sid]
        base = {
            "CallSid": sid,
            "AccountSid": TWILIO_ACCOUNT,
            "To": self.applicant.phone,
            "From": form.get("From", ""),
        }
        status_url = form["StatusCallback"]
        sequence = itertools.count()

        async def status(value: str, **extra: str) -> None:
            call["status"] = value
            await self._callback(
                status_url,
                {
                    **base,
                    "CallStatus": value,
                    "SequenceNumber": str(next(sequence)),
                    **extra,
                },
            )

        await self._pause(0.2)
        await status("initiated")
        await self._pause(0.5)
        await status("ringing")
        await self._pause(1.5)
        if not self._picks_up(number):
            await status("no-answer")
            return
        call["status"] = "in-progress"
        await status("in-progress")
        if self.persona.machine:
            await self._callback(form["Url"], {**base, "CallStatus": "in-progress"})
            await self._pause(1.0)
            await self._callback(
                form["AsyncAmdStatusCallback"], {**base, "AnsweredBy": "machine_start"}
            )
            await self._pause(0.2)
            await status("completed", CallDuration="4")
            await self._twilio_recording(sid, base, form, "4")
            return
        state: dict[str, Any] = {"replies": 0, "call": self._answered()}
        response = await self._callback(
            form["Url"], {**base, "CallStatus": "in-progress"}
        )
        for _ in range(40):
            if call["hung_up"]:
                break
            # Our own webhook's TwiML, read by our own simulated vendor.
            document = ET.fromstring(response.body) if response.body else None  # noqa: S314
            if document is None:
                break
            said = " ".join(say.text or "" for say in document.iter("Say"))
            gather = document.find("Gather")
            redirect = document.find("Redirect")
            if gather is not None:
                digits = await self._answer(said, state)
                if digits is None:
                    break
                response = await self._callback(
                    gather.attrib["action"],
                    {**base, "CallStatus": "in-progress", "Digits": digits},
                )
            elif redirect is not None and redirect.text:
                await self._pause(1.0)
                response = await self._callback(
                    redirect.text, {**base, "CallStatus": "in-progress"}
                )
            else:
                break
        await self._pause(0.5)
        await status("completed", CallDuration="60")
        await self._twilio_recording(sid, base, form, "60")

    async def _twilio_recording(
        self, sid: str, base: Mapping[str, str], form: Mapping[str, str], seconds: str
    ) -> None:
        """A recorded call's RecordingStatusCallback, once the call is over."""
        if form.get("Record") != "true" or "RecordingStatusCallback" not in form:
            return
        await self._pause(2.0)
        recording = "RE" + hashlib.sha256(f"rec:{sid}".encode()).hexdigest()[:32]
        await self._callback(
            form["RecordingStatusCallback"],
            {
                **base,
                "RecordingSid": recording,
                "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/"
                f"{TWILIO_ACCOUNT}/Recordings/{recording}",
                "RecordingStatus": "completed",
                "RecordingDuration": seconds,
                "RecordingChannels": "1",
                "RecordingSource": "OutboundAPI",
            },
        )

    async def _vonage_call(
        self, call_id: str, number: int, body: Mapping[str, Any]
    ) -> None:
        call = self.calls[call_id]
        event_url = body["event_url"][0]
        base = {
            "uuid": call_id,
            "conversation_uuid": f"CON-{call_id}",
            "to": self.applicant.phone[1:],
            "from": body["from"]["number"],
        }

        async def status(value: str) -> None:
            call["status"] = value
            await self._callback(
                event_url,
                {**base, "status": value, "timestamp": self.clock.now().isoformat()},
            )

        await self._pause(0.2)
        await status("started")
        await self._pause(0.5)
        await status("ringing")
        await self._pause(1.5)
        if not self._picks_up(number):
            await status("timeout")
            return
        await status("answered")
        if self.persona.machine:
            await self._callback(body["answer_url"][0], {**base})
            await self._pause(1.0)
            await status("machine")
            await self._pause(0.2)
            await status("completed")
            return
        state: dict[str, Any] = {"replies": 0, "call": self._answered()}
        response = await self._callback(body["answer_url"][0], {**base})
        recording: str | None = None
        for _ in range(40):
            if call["hung_up"] or not response.body:
                break
            actions = json.loads(response.body)
            recording = recording or next(
                (a["eventUrl"][0] for a in actions if a.get("action") == "record"),
                None,
            )
            said = " ".join(
                a.get("text", "") for a in actions if a.get("action") == "talk"
            )
            gather = next((a for a in actions if a.get("action") == "input"), None)
            if gather is None:
                break
            if gather.get("dtmf", {}).get("timeOut") == 1 and not said:
                await self._pause(1.0)
                response = await self._callback(
                    gather["eventUrl"][0],
                    {
                        **base,
                        "dtmf": {"digits": "", "timed_out": True},
                        "timestamp": self.clock.now().isoformat(),
                    },
                )
                continue
            digits = await self._answer(said, state)
            if digits is None:
                break
            response = await self._callback(
                gather["eventUrl"][0],
                {
                    **base,
                    "dtmf": {"digits": digits, "timed_out": not digits},
                    "timestamp": self.clock.now().isoformat(),
                },
            )
        await self._pause(0.5)
        await status("completed")
        if recording is not None:
            # A whole-call record action reports once the call is over.
            await self._pause(2.0)
            file_id = uuidlib.UUID(
                bytes=hashlib.sha256(f"rec:{call_id}".encode()).digest()[:16]
            )
            await self._callback(
                recording,
                {
                    "start_time": self.clock.now().isoformat(),
                    "recording_url": f"https://api.nexmo.com/v1/files/{file_id}",
                    "size": 12345,
                    "recording_uuid": str(uuidlib.uuid4()),
                    "end_time": self.clock.now().isoformat(),
                    "conversation_uuid": base["conversation_uuid"],
                    "timestamp": self.clock.now().isoformat(),
                },
            )

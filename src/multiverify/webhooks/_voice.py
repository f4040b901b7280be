"""Voice callbacks from Twilio and Vonage: verified, turned into call events, answered with TwiML or NCCO.

Each callback URL the phone-call channel hands a vendor carries the call's
route (session, step, attempt, call number) and its ``event``: ``answer``
(the call was picked up: answer with the first prompt), ``gather`` (an
answer, with the ``turn`` it answers), ``status``, ``amd`` (answering-
machine detection), ``recording``, and ``resume`` (a call asking for its
current instruction again). Twilio signs the URL; Vonage signs the body
only, so its URLs carry our own signature as well.

The answer to ``answer``, ``gather`` and ``resume`` is the instruction the
channel saved in the session (``PhoneCallState.instruction``). When nothing
was applied (a duplicate delivery, a session that had finished), the call is
asked to come back once for its current instruction, then hung up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.etree import ElementTree as ET

from .._serde import converter
from .._session import Session
from ..channels import ProviderEvent
from ..exceptions import StepNotFoundError, WebhookFormatError
from ..providers import CallRoute, VoiceInstruction, callback_url, ncco, twiml
from ..providers._twilio_voice import answered_by, twilio_status
from ..providers._voice import verified_query
from ..providers._vonage_voice import vonage_status
from ._base import WebhookRequest, WebhookResponse
from ._twilio import TwilioSignature
from ._vonage import VonageSignature

__all__ = ["TwilioVoiceWebhook", "VonageVoiceWebhook"]

_EVENTS = frozenset({"answer", "gather", "status", "amd", "recording", "resume"})
_SPEAKING = frozenset({"answer", "gather", "resume"})
#: Query parameters we add (and Twilio's ``bodySHA256``), dropped from the base URL.
_ROUTE_KEYS = frozenset(
    {
        "session_id",
        "step_id",
        "attempt",
        "call",
        "event",
        "turn",
        "resume",
        "sig",
        "bodySHA256",
    }
)
_RESUMES = 2


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _base(url: str) -> str:
    """The webhook's own URL without the route we added."""
    parts = urlsplit(url)
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in _ROUTE_KEYS
    ]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def _event(query: Mapping[str, str], vendor: str) -> str:
    event = query.get("event", "")
    if event not in _EVENTS:
        raise WebhookFormatError(
            message=f"{vendor} callback URL names no known event ({event!r})",
            vendor=vendor,
        )
    return event


def _turn(query: Mapping[str, str], vendor: str) -> int:
    try:
        return int(query["turn"])
    except (KeyError, ValueError):
        raise WebhookFormatError(
            message=f"{vendor} answer callback carries no turn", vendor=vendor
        ) from None


def _instruction(
    sessions: Sequence[Session | None], route: CallRoute
) -> VoiceInstruction | None:
    """The instruction the channel saved for this call, if the event was applied."""
    session = sessions[0] if sessions else None
    if session is None:
        return None
    try:
        state = session.step(route.step_id).channel_state or {}
    except StepNotFoundError:  # a route naming no step of this session: nothing to say
        return None
    calls = state.get("calls") or []
    if not calls or calls[-1].get("number") != route.call:
        return None
    raw = state.get("instruction")
    if not raw:
        return None
    instruction: VoiceInstruction = converter.structure(raw, VoiceInstruction)
    return instruction


def _event_for(route: CallRoute, data: dict[str, Any], key: str) -> list[ProviderEvent]:
    """The one call event a callback carries, routed to its session and step."""
    return [
        ProviderEvent(
            session_id=route.session_id,
            step_id=route.step_id,
            kind=f"call.{data['event']}",
            data=data,
            dedupe_key=key,
            attempt=route.attempt,
        )
    ]


def _speaking(
    request: WebhookRequest, sessions: Sequence[Session | None], vendor: str
) -> tuple[Mapping[str, str], CallRoute, str, VoiceInstruction | None] | None:
    """For a callback the vendor expects words back: query, route, base URL and instruction."""
    query = _query(request.url)
    if query.get("event", "") not in _SPEAKING:
        return None
    route = CallRoute.from_query(query, vendor=vendor)
    return query, route, _base(request.url), _instruction(sessions, route)


class TwilioVoiceWebhook:
    """Twilio Programmable Voice callbacks: form posts signed with ``X-Twilio-Signature``.

    A callback with a JSON body (its URL carrying ``bodySHA256``) is read
    the same way once the body matched its hash. Fields used (https://www.twilio.com/docs/voice/api/call-resource#statuscallback,
    .../twiml/gather, .../answering-machine-detection): ``CallSid``,
    ``CallStatus``, ``SequenceNumber``, ``AnsweredBy``, ``Digits``,
    ``SpeechResult``, ``Confidence``, ``RecordingSid``, ``RecordingStatus``.

    Args:
        signature: checks ``X-Twilio-Signature`` (the account's auth token).
        voices: the ``<Say>`` voice per locale, such as ``{"zh-CN": "Polly.Zhiyu"}``.
    """

    def __init__(
        self, signature: TwilioSignature, *, voices: Mapping[str, str] | None = None
    ) -> None:
        self._signature = signature
        self._voices = dict(voices or {})

    def __repr__(self) -> str:
        return "<multiverify.webhooks.TwilioVoiceWebhook>"

    @property
    def vendor(self) -> str:
        """``twilio-voice``."""
        return "twilio-voice"

    async def parse(self, request: WebhookRequest, /) -> Sequence[ProviderEvent]:
        """Verify the signature and read the call event the URL and form describe."""
        params = self._signature.verify(request)
        query = _query(request.url)
        form = dict(params)
        if "bodySHA256" in query:
            # A JSON callback: signed over the URL, its body by the hash.
            form = {
                str(name): str(value)
                for name, value in request.json(self.vendor).items()
                if isinstance(value, str | int | float) and not isinstance(value, bool)
            }
        route = CallRoute.from_query(query, vendor=self.vendor)
        event = _event(query, self.vendor)
        sid = form.get("CallSid")
        if not sid:
            raise WebhookFormatError(
                message="Twilio voice callback has no CallSid", vendor=self.vendor
            )
        data: dict[str, Any] = {"event": event, "call": route.call, "call_id": sid}
        if form.get("CallStatus"):
            data["status"] = twilio_status(form["CallStatus"]).value
        found = answered_by(form.get("AnsweredBy"))
        if found is not None:
            data["answered_by"] = found.value
        key = f"twilio:{sid}:{event}"
        if event == "status":
            key += f":{form.get('CallStatus', '')}:{form.get('SequenceNumber', '')}"
        elif event == "gather":
            data["turn"] = _turn(query, self.vendor)
            data["digits"] = form.get("Digits", "")
            data["speech"] = form.get("SpeechResult", "")
            try:
                data["confidence"] = float(form["Confidence"])
            except (KeyError, ValueError):
                data["confidence"] = None
            key += f":{data['turn']}"
        elif event == "recording":
            if form.get("RecordingStatus", "completed") != "completed":
                return []
            data["recording"] = form.get("RecordingSid", "")
            key += f":{data['recording']}"
        elif event == "resume":
            key += f":{query.get('resume', '')}:{form.get('CallStatus', '')}"
        return _event_for(route, data, key)

    def respond(
        self, request: WebhookRequest, sessions: Sequence[Session | None], /
    ) -> WebhookResponse:
        """TwiML for the call's next step; an empty 204 for status callbacks."""
        speaking = _speaking(request, sessions, self.vendor)
        if speaking is None:
            return WebhookResponse()
        query, route, base, instruction = speaking
        if instruction is None:
            return _twilio_document(_come_back(base, route, query, sessions))
        action = callback_url(base, route, "gather", turn=instruction.turn)
        return WebhookResponse(
            status=200,
            content_type="text/xml; charset=utf-8",
            body=twiml(instruction, action=action, voices=self._voices),
        )


def _come_back(
    base: str,
    route: CallRoute,
    query: Mapping[str, str],
    sessions: Sequence[Session | None],
) -> tuple[str, str] | None:
    """Where a call with nothing applied asks again (``(url, counter)``), or ``None`` to hang up."""
    count = int(query["resume"]) if query.get("resume", "").isdigit() else 0
    if (sessions and sessions[0] is not None) or count >= _RESUMES:
        return None
    parts = urlsplit(callback_url(base, route, "resume"))
    pairs = [*parse_qsl(parts.query), ("resume", str(count + 1))]
    return urlunsplit(parts._replace(query=urlencode(pairs))), str(count + 1)


def _twilio_document(again: tuple[str, str] | None) -> WebhookResponse:
    response = ET.Element("Response")
    if again is None:
        ET.SubElement(response, "Hangup")
    else:
        ET.SubElement(response, "Pause", {"length": "1"})
        redirect = ET.SubElement(response, "Redirect", {"method": "POST"})
        redirect.text = again[0]
    return WebhookResponse(
        status=200,
        content_type="text/xml; charset=utf-8",
        body=ET.tostring(response, encoding="utf-8", xml_declaration=True),
    )


class VonageVoiceWebhook:
    """Vonage Voice callbacks: JSON bodies signed with a JWT (``payload_hash``), URLs signed by us.

    Body fields used (https://developer.vonage.com/en/voice/voice-api/webhook-reference):
    ``uuid``, ``status``, ``timestamp``, ``dtmf`` (``digits``, ``timed_out``),
    ``speech`` (``results[].text``, ``results[].confidence``); a ``record``
    action's callback names no ``uuid``, only ``recording_uuid`` and
    ``recording_url``.

    Args:
        signature: checks the callback's JWT against the signature secret.
        callback_key: the key [`VonageVoice`][multiverify.providers.VonageVoice]
            signs the callback URLs with.
    """

    def __init__(self, signature: VonageSignature, *, callback_key: str) -> None:
        self._signature = signature
        self._key = callback_key

    def __repr__(self) -> str:
        return "<multiverify.webhooks.VonageVoiceWebhook>"

    @property
    def vendor(self) -> str:
        """``vonage-voice``."""
        return "vonage-voice"

    async def parse(self, request: WebhookRequest, /) -> Sequence[ProviderEvent]:
        """Verify the JWT, the body hash and our URL signature; read the call event."""
        self._signature.verify(request)
        query = verified_query(request.url, self._key, vendor=self.vendor)
        route = CallRoute.from_query(query, vendor=self.vendor)
        event = _event(query, self.vendor)
        body = request.json(self.vendor)
        if event == "recording":
            return self._recording(route, body)
        uuid = body.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise WebhookFormatError(
                message="Vonage voice callback has no uuid", vendor=self.vendor
            )
        data: dict[str, Any] = {"event": event, "call": route.call, "call_id": uuid}
        stamp = str(body.get("timestamp", ""))
        key = f"vonage:{uuid}:{event}"
        status = body.get("status")
        if event == "status":
            if not isinstance(status, str):
                raise WebhookFormatError(
                    message="Vonage voice event has no status", vendor=self.vendor
                )
            data["status"] = vonage_status(status).value
            if status in ("machine", "human"):
                data["event"] = "amd"
                data["answered_by"] = status
            key += f":{status}:{stamp}"
        elif event == "gather":
            data["turn"] = _turn(query, self.vendor)
            dtmf = body.get("dtmf")
            speech = body.get("speech")
            data["digits"] = (
                str(dtmf.get("digits") or "") if isinstance(dtmf, dict) else ""
            )
            data["speech"] = ""
            data["confidence"] = None
            results = speech.get("results") if isinstance(speech, dict) else None
            if isinstance(results, list) and results and isinstance(results[0], dict):
                data["speech"] = str(results[0].get("text", ""))
                try:
                    data["confidence"] = float(results[0].get("confidence", ""))
                except (TypeError, ValueError):  # null or not a number: unknown
                    data["confidence"] = None
            key += f":{data['turn']}"
        elif event == "resume":
            key += f":{query.get('resume', '')}:{stamp}"
        return _event_for(route, data, key)

    def _recording(
        self, route: CallRoute, body: Mapping[str, Any]
    ) -> Sequence[ProviderEvent]:
        """A ``record`` action's result: it names no call leg, only the recording.

        The reference kept is ``recording_url`` (what fetches the file with
        the application's JWT), else ``recording_uuid``; the media itself is
        never fetched here.
        """
        reference = body.get("recording_url") or body.get("recording_uuid")
        if not isinstance(reference, str) or not reference:
            raise WebhookFormatError(
                message="Vonage recording callback has no recording_url",
                vendor=self.vendor,
            )
        return _event_for(
            route,
            {"event": "recording", "call": route.call, "recording": reference},
            f"vonage:recording:{reference}",
        )

    def respond(
        self, request: WebhookRequest, sessions: Sequence[Session | None], /
    ) -> WebhookResponse:
        """NCCO for the call's next step; an empty 204 for events."""
        speaking = _speaking(request, sessions, self.vendor)
        if speaking is None:
            return WebhookResponse()
        query, route, base, instruction = speaking
        if instruction is None:
            again = _come_back(base, route, query, sessions)
            actions: list[dict[str, Any]] = []
            if again is not None:
                # NCCO has no redirect: a one-second input whose result comes back.
                url = callback_url(base, route, "resume", key=self._key)
                url = _with(url, "resume", again[1], self._key)
                actions = [
                    {
                        "action": "input",
                        "type": ["dtmf"],
                        "dtmf": {"timeOut": 1, "maxDigits": 1},
                        "eventUrl": [url],
                        "eventMethod": "POST",
                    }
                ]
            return _json(actions)
        event_url = callback_url(
            base, route, "gather", turn=instruction.turn, key=self._key
        )
        recording_url = callback_url(base, route, "recording", key=self._key)
        return _json(
            ncco(instruction, event_url=event_url, recording_url=recording_url)
        )


def _with(url: str, name: str, value: str, key: str) -> str:
    """``url`` (signed) with one more parameter, signed again."""
    from ..providers._voice import _route_signature  # noqa: PLC0415 - one signer

    parts = urlsplit(url)
    pairs = [(k, v) for k, v in parse_qsl(parts.query) if k != "sig"]
    pairs.append((name, value))
    pairs.append(("sig", _route_signature(key, pairs)))
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def _json(value: Any) -> WebhookResponse:
    return WebhookResponse(
        status=200,
        content_type="application/json",
        body=json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(),
    )

"""Vonage Voice API: calls placed with an application JWT, driven by NCCO ``talk`` and ``input``.

Wire format per Vonage's own OpenAPI description of Voice API v1
(``Nexmo/api-specification`` ``definitions/voice.yml``, version 1.3.6),
its NCCO reference (https://developer.vonage.com/en/voice/voice-api/ncco-reference)
and its webhook reference
(https://developer.vonage.com/en/voice/voice-api/webhook-reference):

- ``POST https://api.nexmo.com/v1/calls`` with JSON ``to`` (``[{"type":
  "phone", "number": "8613800138000"}]``, E.164 digits without ``+``),
  ``from``, ``answer_url`` / ``answer_method`` (the NCCO fetched on answer),
  ``event_url`` / ``event_method``, ``machine_detection`` (``continue`` or
  ``hangup``), ``ringing_timer`` (1-120 s) and ``length_timer`` (1-7200 s);
  answers 201 ``{"uuid", "status", "direction", "conversation_uuid"}``.
- ``GET /v1/calls/{uuid}`` (``to``, ``status``, ``duration``,
  ``start_time`` as ``YYYY-MM-DD HH:MM:SS``) and ``GET /v1/calls`` with
  ``date_start``, ``page_size`` (at most 100) and ``order`` (listed under
  ``_embedded.calls``); ``PUT /v1/calls/{uuid}`` with ``{"action":
  "hangup"}``, or ``{"action": "transfer", "destination": {"type": "ncco",
  "ncco": [...]}}`` to replace an answered call's NCCO, answers 204.
- Event ``status`` values: started, ringing, answered, machine, human,
  completed, busy, cancelled, failed, rejected, timeout, unanswered.
- NCCO ``talk`` (``text``, ``language`` from the TTS list, where Mandarin is
  ``cmn-CN``, ``bargeIn``), ``input`` (``type: ["dtmf"]`` with ``dtmf:
  {maxDigits (at most 20), timeOut (at most 10), submitOnHash}``, or
  ``speech`` with a BCP-47 ``language``, ``context`` hints, ``endOnSilence``
  and ``maxDuration`` (at most 60); ``eventUrl`` receives the answer and
  returns the next NCCO) and ``record`` (first in the NCCO and without an
  ending condition it records the whole call; its ``eventUrl`` receives
  ``recording_uuid`` and ``recording_url`` once the call ends).
- Errors are RFC 7807 JSON (``type``, ``title``, ``detail``); 429 carries
  ``Retry-After``.

Vonage signs the body of its callbacks, not their URL, so every callback
URL given here is signed with ``callback_key`` ([`callback_url`][multiverify.providers.callback_url]).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx

from .._http import error_for_response, exchange
from ..exceptions import ProviderUnavailableError
from ._voice import (
    AnsweredBy,
    CallInfo,
    CallRequest,
    CallRoute,
    CallStatus,
    VoiceInstruction,
    callback_url,
)
from ._vonage import VonageApplication

__all__ = ["VonageVoice", "ncco", "vonage_status"]

_STATUS = {
    "started": CallStatus.QUEUED,
    "ringing": CallStatus.RINGING,
    "answered": CallStatus.IN_PROGRESS,
    "machine": CallStatus.IN_PROGRESS,
    "human": CallStatus.IN_PROGRESS,
    "completed": CallStatus.COMPLETED,
    "disconnected": CallStatus.COMPLETED,
    "busy": CallStatus.BUSY,
    "rejected": CallStatus.BUSY,
    "cancelled": CallStatus.CANCELED,
    "failed": CallStatus.FAILED,
    "timeout": CallStatus.NO_ANSWER,
    "unanswered": CallStatus.NO_ANSWER,
}
#: Text-to-speech languages (``talk``) for our locales: Vonage names Mandarin ``cmn-CN``.
_TTS_LANGUAGES = {"en": "en-US", "zh": "cmn-CN", "zh-CN": "cmn-CN"}
#: Speech-recognition languages (``input.speech``) are plain BCP-47.
_ASR_LANGUAGES = {"en": "en-US", "zh": "zh-CN"}
_MAX_DIGITS = 20
_MAX_DTMF_TIMEOUT = 10
_MAX_RINGING = 120
_MAX_LENGTH = 7200


def vonage_status(value: str) -> CallStatus:
    """A Vonage event ``status`` in common terms (an unknown one counts as failed)."""
    return _STATUS.get(value, CallStatus.FAILED)


def ncco(
    instruction: VoiceInstruction, *, event_url: str, recording_url: str | None = None
) -> list[dict[str, Any]]:
    """The NCCO for an instruction; ``event_url`` receives the gathered answer."""
    spoken = _TTS_LANGUAGES.get(instruction.language, instruction.language)
    heard = _ASR_LANGUAGES.get(instruction.language, instruction.language)
    actions: list[dict[str, Any]] = []
    if instruction.record and recording_url is not None:
        actions.append(
            {"action": "record", "eventUrl": [recording_url], "eventMethod": "POST"}
        )
    gather = instruction.gather
    if instruction.say:
        talk: dict[str, Any] = {
            "action": "talk",
            "text": " ".join(instruction.say),
            "language": spoken,
        }
        if gather is not None:
            talk["bargeIn"] = True
        actions.append(talk)
    if gather is not None:
        entry: dict[str, Any] = {
            "action": "input",
            "eventUrl": [event_url],
            "eventMethod": "POST",
        }
        if "speech" in gather.input:
            entry["type"] = ["speech"] + (["dtmf"] if "dtmf" in gather.input else [])
            entry["speech"] = {
                "language": heard,
                "endOnSilence": 2,
                "maxDuration": max(1, min(60, round(gather.timeout))),
            }
            if gather.hints:
                entry["speech"]["context"] = list(gather.hints)
        else:
            entry["type"] = ["dtmf"]
        if "dtmf" in gather.input:
            dtmf: dict[str, Any] = {
                "timeOut": max(1, min(_MAX_DTMF_TIMEOUT, round(gather.timeout)))
            }
            if gather.num_digits is not None:
                dtmf["maxDigits"] = min(_MAX_DIGITS, gather.num_digits)
            else:
                dtmf["submitOnHash"] = True
                dtmf["maxDigits"] = _MAX_DIGITS
            entry["dtmf"] = dtmf
        actions.append(entry)
    return actions


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class VonageVoice:
    """Places scripted calls through the Vonage Voice API.

    Args:
        application: the Vonage application (its JWT authorises each request).
        from_number: the caller id, a Vonage number in E.164.
        callback_url: the public URL of the Vonage voice webhook
            ([`VonageVoiceWebhook`][multiverify.webhooks.VonageVoiceWebhook]).
        callback_key: signs the callback URLs; give the webhook the same key.
        client: an HTTP client to use (left open); one is made and closed otherwise.
        api_base: the API's base URL.
        name: the name policies list (``providers = ["vonage"]``).
    """

    def __init__(
        self,
        *,
        application: VonageApplication,
        from_number: str,
        callback_url: str,
        callback_key: str,
        client: httpx.AsyncClient | None = None,
        api_base: str = "https://api.nexmo.com",
        name: str = "vonage",
    ) -> None:
        self._application = application
        self._from = from_number.removeprefix("+")
        self._callback = callback_url
        self._key = callback_key
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=10.0)
        self._base = api_base.rstrip("/")
        self._name = name

    def __repr__(self) -> str:
        return f"<multiverify.providers.VonageVoice({self._name})>"

    @property
    def name(self) -> str:
        """The vendor's name."""
        return self._name

    def url(self, route: CallRoute, event: str, *, turn: int | None = None) -> str:
        """A signed callback URL for one call."""
        return callback_url(self._callback, route, event, turn=turn, key=self._key)

    async def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        **params: str,
    ) -> dict[str, Any]:
        content = (
            None
            if body is None
            else json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
        )
        headers = {"Accept": "application/json", **self._application.headers()}
        if content is not None:
            headers["Content-Type"] = "application/json"
        request = self._client.build_request(
            method,
            f"{self._base}{path}",
            content=content,
            headers=headers,
            params=params or None,
        )
        response = await exchange(self._client, self._name, request)
        try:
            data = response.json() if response.content else {}
        except (ValueError, RecursionError):
            data = None
        if not response.is_success:
            message = None
            if isinstance(data, dict) and (data.get("title") or data.get("detail")):
                message = (
                    f"{self._name} answered HTTP {response.status_code}: "
                    f"{data.get('title', '')} {data.get('detail', '')}".strip()
                )
            raise error_for_response(self._name, response, message=message)
        if not isinstance(data, dict):
            raise ProviderUnavailableError(
                message=f"{self._name} answered with a body that is not a JSON object",
                provider=self._name,
                status_code=response.status_code,
            )
        return data

    def _info(self, data: Mapping[str, Any]) -> CallInfo:
        uuid = data.get("uuid")
        if not isinstance(uuid, str):
            raise ProviderUnavailableError(
                message=f"{self._name} answered with a call that has no uuid",
                provider=self._name,
            )
        status = str(data.get("status", ""))
        to = data.get("to")
        number = to.get("number") if isinstance(to, dict) else None
        duration = data.get("duration")
        return CallInfo(
            call_id=uuid,
            status=vonage_status(status),
            provider=self._name,
            to=f"+{number}" if isinstance(number, str) else None,
            answered_by=AnsweredBy.MACHINE
            if status == "machine"
            else (AnsweredBy.HUMAN if status == "human" else None),
            created_at=_time(data.get("start_time")),
            duration=float(duration)
            if isinstance(duration, str | int) and str(duration).isdigit()
            else None,
        )

    async def place_call(self, request: CallRequest, /) -> CallInfo:
        """Create the call; Vonage fetches the first NCCO from our webhook on answer."""
        route = request.route
        body: dict[str, Any] = {
            "to": [{"type": "phone", "number": request.to.removeprefix("+")}],
            "from": {"type": "phone", "number": self._from},
            "answer_url": [self.url(route, "answer")],
            "answer_method": "POST",
            "event_url": [self.url(route, "status")],
            "event_method": "POST",
            "ringing_timer": max(1, min(_MAX_RINGING, round(request.ring_timeout))),
            "length_timer": max(1, min(_MAX_LENGTH, round(request.time_limit))),
        }
        if request.machine_detection:
            body["machine_detection"] = "continue"
        return self._info(await self._send("POST", "/v1/calls", body))

    async def get_call(self, call_id: str, /) -> CallInfo:
        """Fetch one call."""
        return self._info(await self._send("GET", f"/v1/calls/{call_id}"))

    async def find_calls(self, *, to: str, since: datetime) -> list[CallInfo]:
        """Calls to ``to`` since ``since``, newest first (Vonage filters by date; the number here)."""
        data = await self._send(
            "GET",
            "/v1/calls",
            date_start=since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            page_size="100",
            order="desc",
        )
        embedded = data.get("_embedded")
        calls = embedded.get("calls") if isinstance(embedded, dict) else None
        if not isinstance(calls, list):
            return []
        found = [self._info(item) for item in calls if isinstance(item, dict)]
        return [call for call in found if call.to == to]

    async def hang_up(
        self, call_id: str, /, *, goodbye: VoiceInstruction | None = None
    ) -> None:
        """End the call (``PUT /v1/calls/{uuid}`` with ``action: hangup``).

        With ``goodbye`` an answered call is transferred to an NCCO that says
        it and ends (``action: transfer``, ``destination: {type: ncco, ncco}``).
        """
        body: dict[str, Any] = {"action": "hangup"}
        if goodbye is not None:
            info = await self.get_call(call_id)
            if info.status.final:
                return
            if info.status is CallStatus.IN_PROGRESS:
                words = ncco(
                    attrs.evolve(goodbye, gather=None, record=False), event_url=""
                )
                body = {
                    "action": "transfer",
                    "destination": {"type": "ncco", "ncco": words},
                }
        await self._send("PUT", f"/v1/calls/{call_id}", body)

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owns_client:
            await self._client.aclose()

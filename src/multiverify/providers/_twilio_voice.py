"""Twilio Programmable Voice: the Calls API, and TwiML ``<Say>``/``<Gather>`` per prompt.

Wire format from the official spec ``twilio/twilio-oai``
``spec/json/twilio_api_v2010.json`` (checked at d50069b):

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` with form fields
  ``To``, ``From``, ``Url`` and ``Method`` (the TwiML fetched on answer),
  ``StatusCallback`` / ``StatusCallbackMethod`` / ``StatusCallbackEvent``
  (repeated: ``initiated``, ``ringing``, ``answered``, ``completed``),
  ``Timeout`` (ring seconds, default 60, at most 600), ``TimeLimit``,
  ``MachineDetection`` (``Enable``) with ``AsyncAmd=true``,
  ``AsyncAmdStatusCallback`` / ``AsyncAmdStatusCallbackMethod``, ``Record``
  and ``RecordingStatusCallback``. Answers 201 with the call resource
  (``sid``, ``status`` in ``call_enum_status``: queued, ringing,
  in-progress, completed, busy, failed, no-answer, canceled;
  ``answered_by``, ``date_created`` as RFC 2822, ``duration``).
- ``GET .../Calls/{Sid}.json`` fetches one; ``GET .../Calls.json`` lists
  (filters ``To``, ``StartTime>``, ``Status``, answering ``{"calls": [...]}``).
- ``POST .../Calls/{Sid}.json`` with ``Status`` (``call_enum_update_status``:
  canceled, completed) ends a call; with ``Twiml`` it replaces a live
  call's instructions.

TwiML per https://www.twilio.com/docs/voice/twiml/gather: ``<Gather>`` with
``input``, ``numDigits``, ``timeout``, ``finishOnKey``, ``action``,
``method``, ``actionOnEmptyResult`` (so that no input calls back too),
``language`` and ``hints``; nested ``<Say language=... voice=...>``; then
``<Hangup/>`` to end. Twilio's create is not idempotent: the channel
reconciles an uncertain create with ``find_calls`` instead of repeating it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from xml.etree import ElementTree as ET

import attrs

from ..exceptions import ProviderRejectedError, ProviderUnavailableError
from ._twilio import TwilioAccount
from ._voice import (
    AnsweredBy,
    CallInfo,
    CallRequest,
    CallStatus,
    VoiceInstruction,
    callback_url,
)

__all__ = ["TwilioVoice", "twiml"]

_STATUS = {
    "queued": CallStatus.QUEUED,
    "initiated": CallStatus.QUEUED,
    "ringing": CallStatus.RINGING,
    "in-progress": CallStatus.IN_PROGRESS,
    "answered": CallStatus.IN_PROGRESS,
    "completed": CallStatus.COMPLETED,
    "busy": CallStatus.BUSY,
    "failed": CallStatus.FAILED,
    "no-answer": CallStatus.NO_ANSWER,
    "canceled": CallStatus.CANCELED,
}
#: The call is no longer in progress, so its TwiML cannot be replaced
#: (https://www.twilio.com/docs/api/errors/21220): it ended on its own.
_NOT_IN_PROGRESS = "21220"
#: Say/Gather languages Twilio expects for our locales.
_LANGUAGES = {"en": "en-US", "zh": "zh-CN"}


def twilio_status(value: str) -> CallStatus:
    """A Twilio ``CallStatus`` in common terms (an unknown one counts as failed)."""
    return _STATUS.get(value, CallStatus.FAILED)


def answered_by(value: str | None) -> AnsweredBy | None:
    """Twilio's ``AnsweredBy`` (``human``, ``machine_start``, ``fax``...) in common terms."""
    if not value:
        return None
    if value == "human":
        return AnsweredBy.HUMAN
    if value.startswith("machine") or value == "fax":
        return AnsweredBy.MACHINE
    return AnsweredBy.UNKNOWN


def twilio_language(locale: str) -> str:
    """The BCP-47 tag Twilio's ``<Say>`` takes for a locale (``en`` -> ``en-US``)."""
    return _LANGUAGES.get(locale, locale)


def twiml(
    instruction: VoiceInstruction,
    *,
    action: str | None,
    voices: Mapping[str, str] | None = None,
) -> bytes:
    """The TwiML document for an instruction; ``action`` receives the gathered answer."""
    language = twilio_language(instruction.language)
    response = ET.Element("Response")
    parent = response
    gather = instruction.gather
    if gather is not None and action is not None:
        attributes = {
            "input": gather.input,
            "timeout": str(max(1, round(gather.timeout))),
            "action": action,
            "method": "POST",
            "actionOnEmptyResult": "true",
            "language": language,
        }
        if gather.num_digits is not None:
            attributes["numDigits"] = str(gather.num_digits)
            attributes["finishOnKey"] = ""
        else:
            attributes["finishOnKey"] = "#"
        if gather.hints:
            attributes["hints"] = ", ".join(gather.hints)
        parent = ET.SubElement(response, "Gather", attributes)
    for line in instruction.say:
        say = ET.SubElement(parent, "Say", {"language": language})
        voice = (voices or {}).get(instruction.language)
        if voice:
            say.set("voice", voice)
        say.text = line
    if instruction.hangup or gather is None:
        ET.SubElement(response, "Hangup")
    body: bytes = ET.tostring(response, encoding="utf-8", xml_declaration=True)
    return body


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class TwilioVoice:
    """Places scripted calls through Twilio Programmable Voice.

    Args:
        account: the Twilio account (credentials and HTTP client).
        from_number: the caller id, a Twilio number in E.164.
        callback_url: the public URL of the Twilio voice webhook
            ([`TwilioVoiceWebhook`][multiverify.webhooks.TwilioVoiceWebhook]);
            every callback URL is this one plus the call's route.
        name: the name policies list (``providers = ["twilio"]``).
    """

    def __init__(
        self,
        *,
        account: TwilioAccount,
        from_number: str,
        callback_url: str,
        name: str = "twilio",
    ) -> None:
        self._account = account
        self._from = from_number
        self._callback = callback_url
        self._name = name

    def __repr__(self) -> str:
        return f"<multiverify.providers.TwilioVoice({self._name})>"

    @property
    def name(self) -> str:
        """The vendor's name."""
        return self._name

    def _calls(self, sid: str | None = None) -> str:
        base = f"{self._account.api_base}/2010-04-01/Accounts/{self._account.account_sid}/Calls"
        return f"{base}/{sid}.json" if sid else f"{base}.json"

    def _info(self, data: Mapping[str, Any]) -> CallInfo:
        sid = data.get("sid")
        if not isinstance(sid, str):
            raise ProviderUnavailableError(
                message=f"{self._name} answered with a call that has no sid",
                provider=self._name,
            )
        duration = data.get("duration")
        return CallInfo(
            call_id=sid,
            status=twilio_status(str(data.get("status", ""))),
            provider=self._name,
            to=data.get("to") if isinstance(data.get("to"), str) else None,
            answered_by=answered_by(data.get("answered_by")),
            created_at=_time(data.get("date_created")),
            duration=float(duration)
            if isinstance(duration, str | int) and str(duration).isdigit()
            else None,
        )

    async def place_call(self, request: CallRequest, /) -> CallInfo:
        """Create the call; Twilio fetches the first TwiML from our webhook on answer."""
        route = request.route
        form: dict[str, str | list[str]] = {
            "To": request.to,
            "From": self._from,
            "Url": callback_url(self._callback, route, "answer"),
            "Method": "POST",
            "StatusCallback": callback_url(self._callback, route, "status"),
            "StatusCallbackMethod": "POST",
            "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
            "Timeout": str(max(5, min(600, round(request.ring_timeout)))),
            "TimeLimit": str(max(1, round(request.time_limit))),
        }
        if request.machine_detection:
            form["MachineDetection"] = "Enable"
            form["AsyncAmd"] = "true"
            form["AsyncAmdStatusCallback"] = callback_url(self._callback, route, "amd")
            form["AsyncAmdStatusCallbackMethod"] = "POST"
        if request.record:
            form["Record"] = "true"
            form["RecordingStatusCallback"] = callback_url(
                self._callback, route, "recording"
            )
            form["RecordingStatusCallbackMethod"] = "POST"
        return self._info(await self._account.request("POST", self._calls(), form=form))

    async def get_call(self, call_id: str, /) -> CallInfo:
        """Fetch one call."""
        return self._info(await self._account.request("GET", self._calls(call_id)))

    async def find_calls(self, *, to: str, since: datetime) -> list[CallInfo]:
        """Calls to ``to`` created since ``since`` (Twilio filters by day; the rest here).

        ``StartTime>`` only matches calls that were dialled: a call's
        ``start_time`` is "Empty if the call has not yet been dialed"
        (``twilio_api_v2010.json``, ``api.v2010.account.call``), so a call
        still ``queued``, which is what a create whose answer was lost has
        just made, is listed with ``Status=queued`` as well.
        """
        listings = (
            {"StartTime>": since.astimezone(UTC).date().isoformat()},
            {"Status": "queued"},
        )
        found: dict[str, CallInfo] = {}
        for params in listings:
            data = await self._account.request(
                "GET", self._calls(), params={"To": to, **params, "PageSize": "50"}
            )
            calls = data.get("calls")
            for item in calls if isinstance(calls, list) else []:
                if isinstance(item, dict):
                    info = self._info(item)
                    found.setdefault(info.call_id, info)
        return sorted(
            (
                c
                for c in found.values()
                if c.created_at is None or c.created_at >= since
            ),
            key=lambda c: c.created_at or datetime.min.replace(tzinfo=UTC),
            reverse=True,
        )

    async def hang_up(
        self, call_id: str, /, *, goodbye: VoiceInstruction | None = None
    ) -> None:
        """End the call: ``Status=completed`` hangs up a live call, ``canceled`` a ringing one.

        With ``goodbye`` a live call's TwiML is replaced (``Twiml``) by the
        goodbye and ``<Hangup/>`` instead
        (https://www.twilio.com/docs/voice/tutorials/how-to-modify-calls-in-progress).
        A call that ended between the lookup and the update (error 21220)
        is left alone.
        """
        info = await self.get_call(call_id)
        if info.status.final:
            return
        live = info.status is CallStatus.IN_PROGRESS
        form = {"Status": "completed" if live else "canceled"}
        if live and goodbye is not None:
            form = {
                "Twiml": twiml(attrs.evolve(goodbye, gather=None), action=None).decode()
            }
        try:
            await self._account.request("POST", self._calls(call_id), form=form)
        except ProviderRejectedError as exc:
            if exc.code != _NOT_IN_PROGRESS:
                raise

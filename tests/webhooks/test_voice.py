"""Tests for the voice webhook handlers on the vendors' documented callback payloads.

Twilio: status callbacks, ``<Gather>`` results, AsyncAmd and recording
status callbacks (form posts), the JSON-body ``bodySHA256`` variant and the
port rules of ``X-Twilio-Signature``. Vonage: event, input and record
webhooks (JSON, signed with a JWT carrying ``payload_hash``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
import pytest

from multiverify.exceptions import WebhookFormatError, WebhookSignatureError
from multiverify.providers import CallRoute, callback_url
from multiverify.testing import FakeClock
from multiverify.webhooks import (
    TwilioSignature,
    TwilioVoiceWebhook,
    VonageSignature,
    VonageVoiceWebhook,
    WebhookRequest,
    twilio_signature,
)

T0 = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
TOKEN = "12345"
HOOK = "https://app.example/hooks/voice"
ROUTE = CallRoute(session_id="s1", step_id="call", attempt=1, call=2)
SECRET = "vonage-signature-secret-0123456789abcdef"
KEY = "callback-key"
UUID = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"


def twilio_form(url: str, params: dict[str, str]) -> WebhookRequest:
    """A form callback signed as Twilio signs it."""
    return WebhookRequest(
        method="POST",
        url=url,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(TOKEN, url, params.items()),
        },
        body=urlencode(params).encode(),
        received_at=T0,
    )


def twilio_json(
    url: str, body: dict[str, Any], *, signed_url: str | None = None
) -> WebhookRequest:
    """A JSON callback: Twilio appends bodySHA256 to the URL and signs the URL alone."""
    raw = json.dumps(body).encode()
    digest = hashlib.sha256(raw).hexdigest()
    full = f"{url}&bodySHA256={digest}"
    signed = f"{signed_url}&bodySHA256={digest}" if signed_url else full
    return WebhookRequest(
        method="POST",
        url=full,
        headers={
            "Content-Type": "application/json",
            "X-Twilio-Signature": twilio_signature(TOKEN, signed),
        },
        body=raw,
        received_at=T0,
    )


def twilio() -> TwilioVoiceWebhook:
    """The handler on the test token."""
    return TwilioVoiceWebhook(TwilioSignature(TOKEN))


class TestTwilioVoiceWebhook:
    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            ("initiated", "queued"),
            ("ringing", "ringing"),
            ("in-progress", "in_progress"),
            ("completed", "completed"),
            ("busy", "busy"),
            ("no-answer", "no_answer"),
            ("failed", "failed"),
            ("canceled", "canceled"),
        ],
    )
    async def test_status_callbacks(self, status: str, expected: str) -> None:
        """Each documented CallStatus becomes a call.status event, deduplicated by its sequence number."""
        url = callback_url(HOOK, ROUTE, "status")
        (event,) = await twilio().parse(
            twilio_form(
                url,
                {
                    "CallSid": "CA1",
                    "AccountSid": "AC1",
                    "CallStatus": status,
                    "SequenceNumber": "3",
                },
            )
        )
        assert event.kind == "call.status"
        assert (event.session_id, event.step_id, event.attempt) == ("s1", "call", 1)
        assert event.data == {
            "event": "status",
            "call": 2,
            "call_id": "CA1",
            "status": expected,
        }
        assert event.dedupe_key == f"twilio:CA1:status:{status}:3"

    @pytest.mark.parametrize(
        ("answered_by", "expected"),
        [
            ("human", "human"),
            ("machine_start", "machine"),
            ("machine_end_beep", "machine"),
            ("machine_end_silence", "machine"),
            ("machine_end_other", "machine"),
            ("fax", "machine"),
            ("unknown", "unknown"),
        ],
    )
    async def test_async_amd(self, answered_by: str, expected: str) -> None:
        """AsyncAmd's AnsweredBy values map to human, machine or unknown."""
        url = callback_url(HOOK, ROUTE, "amd")
        (event,) = await twilio().parse(
            twilio_form(url, {"CallSid": "CA1", "AnsweredBy": answered_by})
        )
        assert event.kind == "call.amd"
        assert event.data["answered_by"] == expected

    async def test_gather_result(self) -> None:
        """A Gather action carries the turn, the digits and the speech with its confidence."""
        url = callback_url(HOOK, ROUTE, "gather", turn=4)
        (event,) = await twilio().parse(
            twilio_form(
                url,
                {
                    "CallSid": "CA1",
                    "CallStatus": "in-progress",
                    "Digits": "1990",
                    "SpeechResult": "装修",
                    "Confidence": "0.91",
                },
            )
        )
        assert event.data["turn"] == 4
        assert event.data["digits"] == "1990"
        assert event.data["speech"] == "装修"
        assert event.data["confidence"] == pytest.approx(0.91)
        assert event.dedupe_key == "twilio:CA1:gather:4"

    async def test_gather_without_turn(self) -> None:
        """A gather callback whose URL lost its turn is a format error."""
        url = callback_url(HOOK, ROUTE, "gather")
        with pytest.raises(WebhookFormatError, match="turn"):
            await twilio().parse(twilio_form(url, {"CallSid": "CA1", "Digits": "1"}))

    async def test_recording_status(self) -> None:
        """A completed recording yields its RecordingSid (the reference), never its URL's media."""
        url = callback_url(HOOK, ROUTE, "recording")
        params = {
            "CallSid": "CA1",
            "RecordingSid": "RE1",
            "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
            "RecordingStatus": "completed",
        }
        (event,) = await twilio().parse(twilio_form(url, params))
        assert event.data["recording"] == "RE1"
        in_progress = {**params, "RecordingStatus": "in-progress"}
        assert await twilio().parse(twilio_form(url, in_progress)) == []

    async def test_no_call_sid(self) -> None:
        """A signed callback without CallSid is a format error."""
        url = callback_url(HOOK, ROUTE, "status")
        with pytest.raises(WebhookFormatError, match="CallSid"):
            await twilio().parse(twilio_form(url, {"CallStatus": "completed"}))

    async def test_unknown_event(self) -> None:
        """A callback URL naming an event we never issue is a format error."""
        url = callback_url(HOOK, ROUTE, "dance")
        with pytest.raises(WebhookFormatError, match="dance"):
            await twilio().parse(twilio_form(url, {"CallSid": "CA1"}))

    async def test_json_body_variant(self) -> None:
        """A JSON callback verifies over its URL and bodySHA256 and is read like a form."""
        url = callback_url(HOOK, ROUTE, "gather", turn=2)
        request = twilio_json(
            url, {"CallSid": "CA7", "CallStatus": "in-progress", "Digits": "1234"}
        )
        (event,) = await twilio().parse(request)
        assert event.data["call_id"] == "CA7"
        assert event.data["digits"] == "1234"
        assert event.data["status"] == "in_progress"

    async def test_json_body_tampered(self) -> None:
        """A JSON body changed after signing no longer matches its bodySHA256."""
        url = callback_url(HOOK, ROUTE, "status")
        request = twilio_json(url, {"CallSid": "CA7", "CallStatus": "completed"})
        forged = WebhookRequest(
            method=request.method,
            url=request.url,
            headers=dict(request.headers),
            body=request.body.replace(b"completed", b"busy"),
            received_at=T0,
        )
        with pytest.raises(WebhookSignatureError, match="bodySHA256"):
            await twilio().parse(forged)

    async def test_json_body_hash_stays_out_of_the_next_url(self) -> None:
        """The TwiML answering a JSON callback never carries its bodySHA256 on."""
        url = callback_url(HOOK, ROUTE, "answer")
        request = twilio_json(url, {"CallSid": "CA7", "CallStatus": "in-progress"})
        response = twilio().respond(request, [None])
        assert b"Redirect" in response.body
        assert b"bodySHA256" not in response.body
        assert b"resume=1" in response.body

    @pytest.mark.parametrize(
        ("arrived", "signed"),
        [
            ("https://app.example:443/hooks/voice", "https://app.example/hooks/voice"),
            ("https://app.example/hooks/voice", "https://app.example:443/hooks/voice"),
        ],
    )
    async def test_port_rules(self, arrived: str, signed: str) -> None:
        """A callback signed over the URL with or without :443 is accepted, form or JSON."""
        params = {"CallSid": "CA1", "CallStatus": "ringing", "SequenceNumber": "1"}
        url = callback_url(arrived, ROUTE, "status")
        signed_url = callback_url(signed, ROUTE, "status")
        form = WebhookRequest(
            method="POST",
            url=url,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": twilio_signature(
                    TOKEN, signed_url, params.items()
                ),
            },
            body=urlencode(params).encode(),
            received_at=T0,
        )
        (event,) = await twilio().parse(form)
        assert event.data["status"] == "ringing"
        (event,) = await twilio().parse(twilio_json(url, params, signed_url=signed_url))
        assert event.data["status"] == "ringing"

    async def test_other_port_is_refused(self) -> None:
        """A signature over another port does not verify at the handler either."""
        params = {"CallSid": "CA1", "CallStatus": "ringing"}
        url = callback_url("https://app.example:8443/hooks/voice", ROUTE, "status")
        signed = callback_url("https://app.example:9443/hooks/voice", ROUTE, "status")
        request = WebhookRequest(
            method="POST",
            url=url,
            headers={
                "X-Twilio-Signature": twilio_signature(TOKEN, signed, params.items())
            },
            body=urlencode(params).encode(),
            received_at=T0,
        )
        with pytest.raises(WebhookSignatureError):
            await twilio().parse(request)

    def test_status_answer_is_empty(self) -> None:
        """Status callbacks are acknowledged with an empty 204."""
        url = callback_url(HOOK, ROUTE, "status")
        request = twilio_form(url, {"CallSid": "CA1", "CallStatus": "ringing"})
        assert twilio().respond(request, [None]).status == 204

    def test_unapplied_answer_hangs_up_after_two_tries(self) -> None:
        """A call whose event was not applied is asked back twice, then hung up."""
        url = callback_url(HOOK, ROUTE, "resume") + "&resume=2"
        request = twilio_form(url, {"CallSid": "CA1"})
        body = twilio().respond(request, [None]).body
        assert b"<Hangup />" in body
        assert b"Redirect" not in body


def vonage_request(
    url: str, body: dict[str, Any], *, iat: float | None = None
) -> WebhookRequest:
    """A Vonage callback: JSON, with an HS256 JWT whose payload_hash covers the body."""
    raw = json.dumps(body).encode()
    token = jwt.encode(
        {
            "iat": int(T0.timestamp() if iat is None else iat),
            "jti": "j1",
            "iss": "Vonage",
            "payload_hash": hashlib.sha256(raw).hexdigest(),
        },
        SECRET,
        algorithm="HS256",
    )
    return WebhookRequest(
        method="POST",
        url=url,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
        },
        body=raw,
        received_at=T0,
    )


def vonage() -> VonageVoiceWebhook:
    """The handler on the test secret and URL key."""
    return VonageVoiceWebhook(
        VonageSignature(SECRET, clock=FakeClock(T0)), callback_key=KEY
    )


def signed(event: str, *, turn: int | None = None) -> str:
    """A callback URL signed with the test key."""
    return callback_url(HOOK, ROUTE, event, turn=turn, key=KEY)


class TestVonageVoiceWebhook:
    @pytest.mark.parametrize(
        ("status", "kind", "expected"),
        [
            ("started", "call.status", "queued"),
            ("ringing", "call.status", "ringing"),
            ("answered", "call.status", "in_progress"),
            ("completed", "call.status", "completed"),
            ("busy", "call.status", "busy"),
            ("rejected", "call.status", "busy"),
            ("timeout", "call.status", "no_answer"),
            ("unanswered", "call.status", "no_answer"),
            ("cancelled", "call.status", "canceled"),
            ("failed", "call.status", "failed"),
            ("machine", "call.amd", "in_progress"),
            ("human", "call.amd", "in_progress"),
        ],
    )
    async def test_event_webhook(self, status: str, kind: str, expected: str) -> None:
        """Each documented event status becomes a call event; machine and human are AMD's finding."""
        body = {
            "uuid": UUID,
            "conversation_uuid": "CON-1",
            "status": status,
            "direction": "outbound",
            "timestamp": "2026-01-05T01:00:00.000Z",
        }
        (event,) = await vonage().parse(vonage_request(signed("status"), body))
        assert event.kind == kind
        assert event.data["status"] == expected
        assert event.data["call"] == 2
        if kind == "call.amd":
            assert event.data["answered_by"] == status
        assert (
            event.dedupe_key
            == f"vonage:{UUID}:status:{status}:2026-01-05T01:00:00.000Z"
        )

    async def test_dtmf_input(self) -> None:
        """An input webhook (the NCCO reference's DTMF example) carries the digits."""
        body = {
            "speech": {},
            "dtmf": {"digits": "1234", "timed_out": False},
            "uuid": UUID,
            "conversation_uuid": "CON-1",
            "timestamp": "2020-01-01T14:00:00.000Z",
        }
        (event,) = await vonage().parse(vonage_request(signed("gather", turn=3), body))
        assert event.data["digits"] == "1234"
        assert event.data["turn"] == 3
        assert event.data["speech"] == ""

    async def test_speech_input(self) -> None:
        """A speech input carries the best result's text and confidence."""
        body = {
            "speech": {
                "timeout_reason": "end_on_silence_timeout",
                "results": [
                    {"confidence": "0.9405097", "text": "Sales"},
                    {"confidence": "0.70543784", "text": "Sails"},
                ],
            },
            "dtmf": {"digits": None, "timed_out": False},
            "uuid": UUID,
            "conversation_uuid": "CON-1",
            "timestamp": "2020-01-01T14:00:00.000Z",
        }
        (event,) = await vonage().parse(vonage_request(signed("gather", turn=1), body))
        assert event.data["speech"] == "Sales"
        assert event.data["confidence"] == pytest.approx(0.9405097)
        assert event.data["digits"] == ""

    @pytest.mark.parametrize("confidence", [None, {"value": 0.9}, [0.9]])
    async def test_speech_input_without_numeric_confidence(
        self, confidence: object
    ) -> None:
        """A result whose confidence is null or not a number keeps its text, confidence None."""
        body = {
            "speech": {"results": [{"confidence": confidence, "text": "Sales"}]},
            "uuid": UUID,
            "timestamp": "2020-01-01T14:00:00.000Z",
        }
        (event,) = await vonage().parse(vonage_request(signed("gather", turn=1), body))
        assert event.data["speech"] == "Sales"
        assert event.data["confidence"] is None

    async def test_record_webhook(self) -> None:
        """A record action's webhook names no call leg: its recording_url is the reference."""
        body = {
            "start_time": "2020-01-01T12:00:00Z",
            "recording_url": "https://api.nexmo.com/v1/files/aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            "size": 12345,
            "recording_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            "end_time": "2020-01-01T12:01:00Z",
            "conversation_uuid": "bbbbbbbb-cccc-dddd-eeee-0123456789ab",
            "timestamp": "2020-01-01T14:00:00.000Z",
        }
        (event,) = await vonage().parse(vonage_request(signed("recording"), body))
        assert event.kind == "call.recording"
        assert event.data == {
            "event": "recording",
            "call": 2,
            "recording": body["recording_url"],
        }
        assert "call_id" not in event.data

    async def test_record_webhook_without_reference(self) -> None:
        """A record webhook with neither recording_url nor recording_uuid is a format error."""
        with pytest.raises(WebhookFormatError, match="recording_url"):
            await vonage().parse(
                vonage_request(signed("recording"), {"conversation_uuid": "CON-1"})
            )

    async def test_event_without_status(self) -> None:
        """An event webhook without a status is a format error."""
        with pytest.raises(WebhookFormatError, match="status"):
            await vonage().parse(vonage_request(signed("status"), {"uuid": UUID}))

    async def test_unsigned_url(self) -> None:
        """A validly signed body sent to a URL we did not sign is refused."""
        url = callback_url(HOOK, ROUTE, "status")
        with pytest.raises(WebhookSignatureError, match="sig"):
            await vonage().parse(vonage_request(url, {"uuid": UUID, "status": "busy"}))

    async def test_non_ascii_url_signature(self) -> None:
        """A sig with non-ASCII characters is refused, not a crash."""
        url = callback_url(HOOK, ROUTE, "status") + "&sig=%C3%A9"
        with pytest.raises(WebhookSignatureError, match="sig"):
            await vonage().parse(vonage_request(url, {"uuid": UUID, "status": "busy"}))

    async def test_altered_route(self) -> None:
        """Changing the session in a signed URL breaks its signature."""
        url = signed("status").replace("session_id=s1", "session_id=s2")
        with pytest.raises(WebhookSignatureError):
            await vonage().parse(vonage_request(url, {"uuid": UUID, "status": "busy"}))

    async def test_stale_token(self) -> None:
        """A token older than max_age is refused, however well signed."""
        request = vonage_request(
            signed("status"),
            {"uuid": UUID, "status": "busy"},
            iat=T0.timestamp() - 3600,
        )
        with pytest.raises(WebhookSignatureError, match="issued"):
            await vonage().parse(request)

    def test_unapplied_answer_comes_back_once_more(self) -> None:
        """With nothing applied the NCCO is a one-second input whose signed URL asks again."""
        request = vonage_request(signed("answer"), {"uuid": UUID})
        (action,) = json.loads(vonage().respond(request, [None]).body)
        assert action["action"] == "input"
        assert action["dtmf"] == {"timeOut": 1, "maxDigits": 1}
        (url,) = action["eventUrl"]
        query = dict(parse_qsl(urlsplit(url).query))
        assert query["event"] == "resume"
        assert query["resume"] == "1"
        again = vonage_request(url, {"uuid": UUID, "timestamp": "t"})
        (action,) = json.loads(vonage().respond(again, [None]).body)
        (url,) = action["eventUrl"]
        assert dict(parse_qsl(urlsplit(url).query))["resume"] == "2"
        last = vonage_request(url, {"uuid": UUID, "timestamp": "t"})
        assert json.loads(vonage().respond(last, [None]).body) == []

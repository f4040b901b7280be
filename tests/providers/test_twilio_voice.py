"""Tests for the Twilio voice provider (respx) and TwiML rendering."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import pytest
import respx

from multiverify.exceptions import ProviderRejectedError
from multiverify.providers import (
    CallRequest,
    CallRoute,
    CallStatus,
    Gather,
    TwilioAccount,
    TwilioVoice,
    VoiceInstruction,
    twiml,
)

SID = "AC" + "1" * 32
CALLS = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Calls.json"
ROUTE = CallRoute(session_id="s1", step_id="call", attempt=1, call=2)


def _voice(router: respx.Router) -> TwilioVoice:
    client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    return TwilioVoice(
        account=TwilioAccount(account_sid=SID, auth_token="t", client=client),
        from_number="+15005550006",
        callback_url="https://app.example/hooks/voice",
    )


class TestTwilioVoice:
    async def test_place_call_form(self) -> None:
        """The create sends the documented fields, with the route in every callback URL."""
        router = respx.Router()
        route = router.post(CALLS).respond(201, json={"sid": "CA1", "status": "queued"})
        info = await _voice(router).place_call(
            CallRequest(to="+8613800138000", route=ROUTE, record=True)
        )
        assert info.call_id == "CA1"
        assert info.status is CallStatus.QUEUED
        form = parse_qs(route.calls.last.request.content.decode())
        assert form["To"] == ["+8613800138000"]
        assert form["StatusCallbackEvent"] == [
            "initiated",
            "ringing",
            "answered",
            "completed",
        ]
        assert form["MachineDetection"] == ["Enable"]
        assert form["AsyncAmd"] == ["true"]
        assert form["Record"] == ["true"]
        assert "session_id=s1" in form["Url"][0]
        assert "event=answer" in form["Url"][0]
        assert "event=amd" in form["AsyncAmdStatusCallback"][0]

    async def test_errors_are_mapped(self) -> None:
        """An invalid number (400, 21211) is a permanent rejection with Twilio's code."""
        router = respx.Router()
        router.post(CALLS).respond(
            400, json={"code": 21211, "message": "Invalid 'To'", "status": 400}
        )
        with pytest.raises(ProviderRejectedError) as caught:
            await _voice(router).place_call(CallRequest(to="+1", route=ROUTE))
        assert caught.value.code == "21211"

    async def test_find_get_and_hang_up(self) -> None:
        """Calls are found by number and date; a live call is hung up with Status=completed."""
        router = respx.Router()
        router.get(CALLS).respond(
            200,
            json={
                "calls": [
                    {
                        "sid": "CA9",
                        "status": "in-progress",
                        "to": "+8613800138000",
                        "date_created": "Mon, 05 Jan 2026 01:00:00 +0000",
                    }
                ]
            },
        )
        router.get(CALLS.replace(".json", "/CA9.json")).respond(
            200, json={"sid": "CA9", "status": "in-progress"}
        )
        update = router.post(CALLS.replace(".json", "/CA9.json")).respond(
            200, json={"sid": "CA9", "status": "completed"}
        )
        voice = _voice(router)
        from datetime import UTC, datetime

        found = await voice.find_calls(
            to="+8613800138000", since=datetime(2026, 1, 5, tzinfo=UTC)
        )
        assert [c.call_id for c in found] == ["CA9"]
        await voice.hang_up("CA9")
        assert parse_qs(update.calls.last.request.content.decode()) == {
            "Status": ["completed"]
        }

    async def test_hang_up_a_call_that_just_ended(self) -> None:
        """A goodbye to a call that ended after the lookup (21220) is no error; others still are."""
        router = respx.Router()
        router.get(CALLS.replace(".json", "/CA9.json")).respond(
            200, json={"sid": "CA9", "status": "in-progress"}
        )
        router.post(CALLS.replace(".json", "/CA9.json")).mock(
            side_effect=[
                httpx.Response(
                    400,
                    json={
                        "code": 21220,
                        "message": "Invalid call state",
                        "status": 400,
                    },
                ),
                httpx.Response(
                    400, json={"code": 21201, "message": "No to", "status": 400}
                ),
            ]
        )
        voice = _voice(router)
        goodbye = VoiceInstruction(turn=4, language="en", say=["Bye"], hangup=True)

        await voice.hang_up("CA9", goodbye=goodbye)
        with pytest.raises(ProviderRejectedError) as caught:
            await voice.hang_up("CA9", goodbye=goodbye)
        assert caught.value.code == "21201"

    async def test_find_includes_queued_calls(self) -> None:
        """A call still queued has no start_time, so StartTime> misses it: Status=queued finds it."""
        from datetime import UTC, datetime

        def call(sid: str, status: str, created: str) -> dict[str, str]:
            return {"sid": sid, "status": status, "date_created": created}

        router = respx.Router()
        dialled = router.get(CALLS, params={"StartTime>": "2026-01-05"}).respond(
            200,
            json={
                "calls": [call("CA1", "completed", "Mon, 05 Jan 2026 01:00:00 +0000")]
            },
        )
        queued = router.get(CALLS, params={"Status": "queued"}).respond(
            200,
            json={
                "calls": [
                    call("CA2", "queued", "Mon, 05 Jan 2026 02:00:00 +0000"),
                    call("CA0", "queued", "Sun, 04 Jan 2026 23:00:00 +0000"),
                    "not a call",
                ]
            },
        )
        found = await _voice(router).find_calls(
            to="+8613800138000", since=datetime(2026, 1, 5, tzinfo=UTC)
        )
        assert [c.call_id for c in found] == ["CA2", "CA1"]
        assert found[0].status is CallStatus.QUEUED
        for route in (dialled, queued):
            assert route.calls.last.request.url.params["To"] == "+8613800138000"


class TestTwiml:
    def test_gather_and_say(self) -> None:
        """A prompt becomes <Gather> around <Say>, posting to the action even on empty input."""
        body = twiml(
            VoiceInstruction(
                turn=3,
                language="zh-CN",
                say=["请输入"],
                gather=Gather(num_digits=4, timeout=10),
            ),
            action="https://app/x?turn=3",
            voices={"zh-CN": "Polly.Zhiyu"},
        ).decode()
        assert (
            '<Gather input="dtmf" timeout="10" action="https://app/x?turn=3" method="POST" actionOnEmptyResult="true" language="zh-CN" numDigits="4" finishOnKey="">'
            in body
        )
        assert '<Say language="zh-CN" voice="Polly.Zhiyu">请输入</Say>' in body

    def test_hangup(self) -> None:
        """A closing instruction says goodbye and hangs up."""
        body = twiml(
            VoiceInstruction(turn=9, language="en", say=["Bye"], hangup=True),
            action=None,
        )
        assert body.endswith(b'<Say language="en-US">Bye</Say><Hangup /></Response>')


class TestGoodbye:
    async def test_live_call_hears_the_goodbye(self) -> None:
        """A live call's TwiML is replaced by the goodbye and a hang-up (Twiml on the update)."""
        router = respx.Router()
        router.get(CALLS.replace(".json", "/CA9.json")).respond(
            200, json={"sid": "CA9", "status": "in-progress"}
        )
        update = router.post(CALLS.replace(".json", "/CA9.json")).respond(
            200, json={"sid": "CA9", "status": "in-progress"}
        )
        await _voice(router).hang_up(
            "CA9",
            goodbye=VoiceInstruction(
                turn=4, language="en", say=["Goodbye."], hangup=True
            ),
        )
        form = parse_qs(update.calls.last.request.content.decode())
        assert list(form) == ["Twiml"]
        assert form["Twiml"][0].endswith(
            '<Response><Say language="en-US">Goodbye.</Say><Hangup /></Response>'
        )

    async def test_ringing_call_is_canceled(self) -> None:
        """A ringing call is canceled, goodbye or not."""
        router = respx.Router()
        router.get(CALLS.replace(".json", "/CA9.json")).respond(
            200, json={"sid": "CA9", "status": "ringing"}
        )
        update = router.post(CALLS.replace(".json", "/CA9.json")).respond(
            200, json={"sid": "CA9", "status": "canceled"}
        )
        await _voice(router).hang_up(
            "CA9", goodbye=VoiceInstruction(turn=1, language="en", say=["Bye"])
        )
        assert parse_qs(update.calls.last.request.content.decode()) == {
            "Status": ["canceled"]
        }

"""Tests for the phone-call channel, end to end on the sandbox voice vendor (Twilio and Vonage wire formats)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import attrs
import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from multiverify import ResultStatus, Session
from multiverify.channels import (
    CallAttempt,
    Finished,
    PhoneCallChannel,
    PhoneCallState,
    ProviderEvent,
    StepContext,
    Submission,
    TimerDue,
    Waiting,
)
from multiverify.exceptions import InvalidInputError, ProviderUnavailableError
from multiverify.providers import (
    CallRoute,
    CallStatus,
    TwilioAccount,
    TwilioVoice,
    VonageApplication,
    VonageVoice,
    callback_url,
)
from multiverify.sandbox import VOICE_PERSONAS
from multiverify.sandbox._voice import CALLBACK_URL, VONAGE_URL_KEY
from multiverify.stores import MemoryStore
from multiverify.webhooks import (
    TwilioSignature,
    TwilioVoiceWebhook,
    WebhookRequest,
    twilio_signature,
)

Build = Any  # the harness fixture of conftest.py

VENDORS = ["twilio", "vonage"]
SHANGHAI = ZoneInfo("Asia/Shanghai")
SID = "AC" + "2" * 32
TOKEN = "twilio-token"
CALLS = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Calls.json"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)


def _result(session: Session):  # noqa: ANN202 - a ChannelResult
    result = session.step("call").result
    assert result is not None
    return result


def _context(h: Any) -> StepContext:
    """A step context for calling the channel directly."""
    return StepContext(
        session_id="s",
        step_id="call",
        attempt=1,
        provider=None,
        idempotency_key="s:call:1",
        applicant=h.applicant,
        options={},
        clock=h.clock,
    )


def _calls(session: Session) -> list[str]:
    state = session.step("call").channel_state
    return [
        datetime.fromisoformat(call["placed_at"])
        .astimezone(SHANGHAI)
        .strftime("%d %H:%M")
        for call in state["calls"]
    ]


@pytest.mark.parametrize("vendor", VENDORS)
class TestPersonas:
    async def test_honest(self, harness: Build, vendor: str) -> None:
        """Every answer matches: passed, identity, intent and details confirmed, full score."""
        session = await harness(vendor, "honest").run()
        result = _result(session)
        assert result.status is ResultStatus.PASSED
        assert set(result.signal_names) == {
            "identity_confirmed",
            "intent_confirmed",
            "details_completed",
        }
        assert result.score == 1.0
        assert result.facts["calls"] == 1

    async def test_late_pickup(self, harness: Build, vendor: str) -> None:
        """Two unanswered calls at +0 and +30 min, the third at +2 h is answered."""
        session = await harness(vendor, "late-pickup").run()
        result = _result(session)
        assert result.status is ResultStatus.PASSED
        assert "no_answer" in result.signal_names
        assert _calls(session) == ["05 09:00", "05 09:30", "05 11:30"]

    async def test_unreachable(self, harness: Build, vendor: str) -> None:
        """Never answered: four calls, the last the next day at 10:00, then no contact."""
        session = await harness(vendor, "unreachable").run()
        result = _result(session)
        assert result.status is ResultStatus.FAILED
        assert result.signal_names == ("no_answer", "no_contact")
        assert result.detail == "no contact after 4 calls"
        assert _calls(session) == ["05 09:00", "05 09:30", "05 11:30", "06 10:00"]

    async def test_answering_machine(self, harness: Build, vendor: str) -> None:
        """A machine answers: hung up at once, retried, finally no contact."""
        h = harness(vendor, "answering-machine")
        session = await h.run()
        result = _result(session)
        assert result.status is ResultStatus.FAILED
        assert set(result.signal_names) == {"answering_machine", "no_contact"}
        assert len(_calls(session)) == 4

    async def test_fraudster(self, harness: Build, vendor: str) -> None:
        """Wrong ID digits end the call at once: failed on identity."""
        session = await harness(vendor, "fraudster").run()
        result = _result(session)
        assert result.status is ResultStatus.FAILED
        assert "identity_mismatch" in result.signal_names
        assert "identity_confirmed" not in result.signal_names
        state = session.step("call").channel_state
        assert state["instruction"]["hangup"] is True

    async def test_hesitant(self, harness: Build, vendor: str) -> None:
        """Slow answers, a fumbled key and a silent question: hesitant, evasive, inconclusive."""
        session = await harness(vendor, "hesitant").run()
        result = _result(session)
        assert result.status is ResultStatus.INCONCLUSIVE
        assert {
            "hesitant",
            "evasive_answer",
            "detail_mismatch",
            "intent_confirmed",
        } <= set(result.signal_names)
        answers = {
            a["prompt_id"]: a for a in session.step("call").channel_state["answers"]
        }
        assert answers["id_last4"]["invalid"] == 1
        assert answers["birth_year"]["hesitant"] is True
        assert 0 < (result.score or 0) < 1

    async def test_coached(self, harness: Build, vendor: str) -> None:
        """Admitting someone told them what to say raises coached."""
        result = _result(await harness(vendor, "coached").run())
        assert result.status is ResultStatus.INCONCLUSIVE
        assert "coached" in result.signal_names

    async def test_hang_up_mid_script(self, harness: Build, vendor: str) -> None:
        """Hanging up after two answers is inconclusive, hung_up."""
        persona = attrs.evolve(
            VOICE_PERSONAS["honest"], name="quitter", hangs_up_after=2
        )
        result = _result(await harness(vendor, persona).run())
        assert result.status is ResultStatus.INCONCLUSIVE
        assert "hung_up" in result.signal_names


class TestWindowsAndSchedule:
    async def test_waits_for_the_window(self, harness: Build) -> None:
        """Started at 23:00 local, the first call goes out at 08:00."""
        h = harness(start=datetime(2026, 1, 5, 15, 0, tzinfo=UTC))
        session = await h.verifier.start(h.applicant)
        await h.settle()
        waiting = await h.verifier.get(session.session_id)
        (challenge,) = waiting.challenges
        assert "2026-01-06 08:00" in challenge.message
        assert challenge.destination == "+86*******8000"
        done = await h.finish(session.session_id)
        assert _calls(done) == ["06 08:00"]
        assert _result(done).status is ResultStatus.PASSED

    async def test_policy_schedule(self, harness: Build) -> None:
        """The policy's schedule and limits replace the defaults."""
        h = harness(
            voice="unreachable", options={"retry_schedule": ["10m"], "max_attempts": 3}
        )
        session = await h.run()
        assert _calls(session) == ["05 09:00", "05 09:10", "05 09:20"]


class TestState:
    async def test_state_round_trips(self, harness: Build) -> None:
        """The stored channel state reads back as a PhoneCallState."""
        from multiverify._serde import converter

        session = await harness().run()
        state = converter.structure(
            dict(session.step("call").channel_state), PhoneCallState
        )
        assert state.current is not None
        assert state.current.ended
        assert [a.prompt_id for a in state.answers][:2] == ["recording", "id_last4"]


@pytest.mark.parametrize("vendor", VENDORS)
class TestRecording:
    async def test_reference_in_evidence(self, harness: Build, vendor: str) -> None:
        """A recorded call waits for the vendor's recording reference and names it, never the media."""
        h = harness(vendor)
        session = await h.run()
        result = _result(session)
        assert result.status is ResultStatus.PASSED
        assert result.facts["recorded"] is True
        (recording,) = [e for e in result.evidence if e.kind == "recording"]
        if vendor == "twilio":
            assert recording.reference.startswith("RE")
        else:
            assert recording.reference.startswith("https://api.nexmo.com/v1/files/")
        state = session.step("call").channel_state
        assert state["recordings"] == [recording.reference]
        assert state["awaiting_recording"] is False

    async def test_disclosure_comes_first(self, harness: Build, vendor: str) -> None:
        """Recording starts with the call and the first words are the recording notice."""
        h = harness(vendor)
        await h.run()
        answer = next(
            resp for r, resp in h.sandbox.callbacks if "event=answer" in r.url
        )
        if vendor == "twilio":
            (call,) = h.sandbox.calls.values()
            assert call["form"]["Record"] == "true"
            assert answer.body.decode().index("录音") < answer.body.decode().index(
                "</Gather>"
            )
        else:
            actions = json.loads(answer.body)
            assert actions[0]["action"] == "record"
            assert actions[1]["action"] == "talk"
            assert "本次通话将被录音" in actions[1]["text"]

    async def test_failed_call_keeps_its_recording(
        self, harness: Build, vendor: str
    ) -> None:
        """A call that fails on identity still waits for and names its recording."""
        result = _result(await harness(vendor, "fraudster").run())
        assert result.status is ResultStatus.FAILED
        assert "identity_mismatch" in result.signal_names
        assert [e.kind for e in result.evidence].count("recording") == 1

    async def test_no_reference_arrives(
        self, harness: Build, vendor: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a recording callback the result comes after recording_wait and says so."""
        h = harness(vendor, options={"recording_wait": "10m"})
        real = h.sandbox._callback

        async def drop_recordings(url: str, params: Any) -> Any:
            if "event=recording" in url:
                return None
            return await real(url, params)

        monkeypatch.setattr(h.sandbox, "_callback", drop_recordings)
        started = h.clock.now()
        session = await h.run()
        result = _result(session)
        assert result.status is ResultStatus.PASSED
        assert result.facts["recorded"] is False
        assert "no recording reference" in result.detail
        assert not [e for e in result.evidence if e.kind == "recording"]
        finished = result.finished_at
        assert finished is not None
        assert (finished - started).total_seconds() >= 600

    async def test_not_recorded(self, harness: Build, vendor: str) -> None:
        """With recording off nothing is recorded and the result does not wait."""
        h = harness(vendor, options={"recording": False})
        session = await h.run()
        result = _result(session)
        assert result.status is ResultStatus.PASSED
        assert "recorded" not in result.facts
        assert not [r for r, _ in h.sandbox.callbacks if "event=recording" in r.url]
        if vendor == "twilio":
            (call,) = h.sandbox.calls.values()
            assert "Record" not in call["form"]


def _twilio_behind(router: respx.Router) -> TwilioVoice:
    """A Twilio voice provider named ``twilio`` whose HTTP goes to ``router``."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
    return TwilioVoice(
        account=TwilioAccount(account_sid=SID, auth_token=TOKEN, client=client),
        from_number="+8610555010",
        callback_url=CALLBACK_URL,
    )


class TestFailover:
    async def test_rejected_placement_moves_to_the_next_provider(
        self, harness: Build
    ) -> None:
        """Twilio refusing the call (21215) starts the step again on Vonage, under the same script."""
        router = respx.Router()
        create = router.post(CALLS).respond(
            400, json={"code": 21215, "message": "Geo permission", "status": 400}
        )
        h = harness(
            "vonage", extra=(_twilio_behind(router),), providers=("twilio", "vonage")
        )
        session = await h.run()
        result = _result(session)
        assert create.called
        assert result.status is ResultStatus.PASSED
        assert result.provider == "vonage"
        assert result.attempts == 2
        assert {"identity_confirmed", "intent_confirmed"} <= set(result.signal_names)
        assert [c["provider"] for c in session.step("call").channel_state["calls"]] == [
            "vonage"
        ]

    async def _twilio_call_fails(self, h: Any) -> Session:
        """Start, let Twilio report the first call failed, and run to the end."""
        session = await h.verifier.start(h.applicant)
        await h.settle()
        url = callback_url(
            CALLBACK_URL,
            CallRoute(session_id=session.session_id, step_id="call", attempt=1, call=1),
            "status",
        )
        form = {"CallSid": "CA1", "CallStatus": "failed", "SequenceNumber": "1"}
        request = WebhookRequest(
            method="POST",
            url=url,
            headers={"X-Twilio-Signature": twilio_signature(TOKEN, url, form.items())},
            body=urlencode(form).encode(),
            received_at=h.clock.now(),
        )
        (event,) = await TwilioVoiceWebhook(TwilioSignature(TOKEN)).parse(request)
        await h.verifier.handle_event(event)
        return await h.finish(session.session_id)

    async def test_failed_call_is_placed_again_elsewhere(self, harness: Build) -> None:
        """A call Twilio reports failed is placed again at the step's next provider in the same attempt."""
        router = respx.Router()
        router.post(CALLS).respond(201, json={"sid": "CA1", "status": "queued"})
        h = harness(
            "vonage", extra=(_twilio_behind(router),), providers=("twilio", "vonage")
        )
        done = await self._twilio_call_fails(h)
        result = _result(done)
        assert result.status is ResultStatus.PASSED
        assert result.attempts == 1
        calls = done.step("call").channel_state["calls"]
        assert [(c["number"], c["provider"], c["ended"]) for c in calls] == [
            (1, "twilio", True),
            (2, "vonage", True),
        ]
        assert calls[0]["status"] == "failed"
        assert done.step("call").channel_state["failed_providers"] == ["twilio"]

    async def test_only_the_steps_providers(self, harness: Build) -> None:
        """A step that lists only Twilio never moves its call to another vendor."""
        router = respx.Router()
        router.post(CALLS).respond(201, json={"sid": "CA1", "status": "queued"})
        h = harness("vonage", extra=(_twilio_behind(router),), providers=("twilio",))
        done = await self._twilio_call_fails(h)
        result = _result(done)
        assert result.status is ResultStatus.ERROR
        assert [c["provider"] for c in done.step("call").channel_state["calls"]] == [
            "twilio"
        ]
        assert not h.sandbox.calls

    async def test_every_vendor_fails(self, harness: Build) -> None:
        """When no vendor can carry the call the step ends with an error naming each."""
        router = respx.Router()
        router.post(CALLS).respond(201, json={"sid": "CA1", "status": "queued"})
        vonage_router = respx.Router()
        h = harness("twilio")
        vonage_router.post("https://api.nexmo.com/v1/calls").respond(
            403,
            json={"title": "Forbidden", "detail": f"cannot call {h.applicant.phone}"},
        )
        channel = PhoneCallChannel(
            [
                _twilio_behind(router),
                VonageVoice(
                    application=VonageApplication(application_id="a", private_key=KEY),
                    from_number="+8610555010",
                    callback_url=CALLBACK_URL,
                    callback_key=VONAGE_URL_KEY,
                    client=httpx.AsyncClient(
                        transport=httpx.MockTransport(vonage_router.async_handler)
                    ),
                ),
            ]
        )
        state = PhoneCallState(
            zones=("Asia/Shanghai",),
            calls=(
                CallAttempt(
                    number=1,
                    provider="twilio",
                    call_id="CA1",
                    placed_at=h.clock.now(),
                ),
            ),
            next_call=2,
        )
        outcome = await channel.handle(
            _context(h),
            state,
            ProviderEvent(
                session_id="s",
                step_id="call",
                kind="call.status",
                data={"event": "status", "call": 1, "status": "failed"},
                dedupe_key="k",
            ),
        )
        assert isinstance(outcome, Finished)
        assert outcome.result.status is ResultStatus.ERROR
        assert "vonage" in outcome.result.detail
        assert "Forbidden" in outcome.result.detail
        # The vendor's words quoted the number: the detail keeps it masked.
        assert h.applicant.phone[1:] not in outcome.result.detail


class TestPlacement:
    async def test_uncertain_create_is_looked_up_not_repeated(
        self, harness: Build
    ) -> None:
        """A 502 on create may have placed the call: it is found at the vendor, not placed twice."""
        router = respx.Router()
        create = router.post(CALLS).respond(502, text="bad gateway")
        router.get(CALLS).respond(
            200,
            json={
                "calls": [
                    {
                        "sid": "CA5",
                        "status": "ringing",
                        "to": "+8613800138000",
                        "date_created": "Mon, 05 Jan 2026 01:00:00 +0000",
                    }
                ]
            },
        )
        h = harness()
        channel = PhoneCallChannel([_twilio_behind(router)])
        outcome = await channel.start(_context(h))
        assert create.call_count == 1
        assert outcome.state.current.call_id == "CA5"

    async def test_unsent_create_is_not_looked_up(self, harness: Build) -> None:
        """A create that never reached the vendor (connection refused) fails without a lookup."""
        router = respx.Router()
        router.post(CALLS).mock(side_effect=httpx.ConnectError("refused"))
        lookup = router.get(CALLS).respond(200, json={"calls": []})
        h = harness()
        channel = PhoneCallChannel([_twilio_behind(router)])
        with pytest.raises(ProviderUnavailableError):
            await channel.start(_context(h))
        assert not lookup.called


@pytest.mark.parametrize("vendor", VENDORS)
class TestConsent:
    async def test_not_now_is_called_back(self, harness: Build, vendor: str) -> None:
        """'Not a good time' ends the call politely and the next call per the schedule confirms."""
        h = harness(vendor, "busy-now")
        session = await h.run()
        result = _result(session)
        assert result.status is ResultStatus.PASSED
        assert "call_back_later" in result.signal_names
        assert "refused" not in result.signal_names
        assert _calls(session) == ["05 09:00", "05 09:30"]
        # The first call heard the goodbye, not the next question.
        answers = [resp for r, resp in h.sandbox.callbacks if "event=gather" in r.url]
        assert "稍后再给您来电" in answers[0].body.decode()
        # The second call's answers alone make the result; both calls were recorded.
        state = session.step("call").channel_state
        assert [a["prompt_id"] for a in state["answers"]] == [
            "recording",
            "id_last4",
            "birth_year",
            "loan_terms",
            "purpose",
            "third_party",
        ]
        assert sorted(state["recorded_calls"]) == [1, 2]
        assert [e.kind for e in result.evidence].count("recording") == 2

    async def test_declining_consent_can_fail(
        self, harness: Build, vendor: str
    ) -> None:
        """A script whose opening question is on_mismatch = fail ends refused instead."""
        script = {
            "recording": False,
            "prompts": [
                {
                    "id": "consent",
                    "kind": "disclosure",
                    "text": {"zh-CN": "继续请按{yes_key}, 不方便请按{no_key}。"},
                    "expect": {"kind": "yes_no"},
                    "on_mismatch": "fail",
                },
                {
                    "id": "year",
                    "kind": "identity",
                    "text": {"zh-CN": "请输入您的出生年份。"},
                    "expect": {"kind": "digits", "length": 4, "source": "birth_year"},
                },
            ],
        }
        session = await harness(vendor, "busy-now", options={"script": script}).run()
        result = _result(session)
        assert result.status is ResultStatus.FAILED
        assert "refused" in result.signal_names
        assert _calls(session) == ["05 09:00"]


class TestCallbacks:
    async def _started(self, harness: Build) -> tuple[PhoneCallChannel, Any, Any]:
        router = respx.Router()
        router.post(CALLS).respond(201, json={"sid": "CA1", "status": "queued"})
        h = harness()
        channel = PhoneCallChannel([_twilio_behind(router)])
        outcome = await channel.start(_context(h))
        return channel, h, outcome.state

    @staticmethod
    def _status(status: str) -> ProviderEvent:
        return ProviderEvent(
            session_id="s",
            step_id="call",
            kind="call.status",
            data={"event": "status", "call": 1, "call_id": "CA1", "status": status},
            dedupe_key=status,
        )

    async def test_late_ringing_does_not_move_the_call_back(
        self, harness: Build
    ) -> None:
        """A ringing callback delivered after in-progress leaves the call in progress."""
        channel, h, state = await self._started(harness)
        for status in ("in_progress", "ringing", "queued"):
            outcome = await channel.handle(_context(h), state, self._status(status))
            state = outcome.state
        assert state.current.status is CallStatus.IN_PROGRESS

    @pytest.mark.parametrize(
        ("status", "signal"), [("busy", "busy"), ("no_answer", "no_answer")]
    )
    async def test_busy_and_no_answer_call_again(
        self, harness: Build, status: str, signal: str
    ) -> None:
        """A busy line or no answer schedules the next call 30 minutes later, as a durable timer."""
        channel, h, state = await self._started(harness)
        outcome = await channel.handle(_context(h), state, self._status(status))
        assert isinstance(outcome, Waiting)
        assert outcome.timers == (("dial-2", h.clock.now() + timedelta(minutes=30)),)
        assert outcome.state.signals == (signal,)
        assert outcome.state.current.ended


@pytest.mark.parametrize("vendor", VENDORS)
async def test_declines_the_loan(harness: Build, vendor: str) -> None:
    """Denying the application at the loan question fails the call with intent_declined."""
    persona = attrs.evolve(VOICE_PERSONAS["honest"], name="denier", declines=True)
    result = _result(await harness(vendor, persona).run())
    assert result.status is ResultStatus.FAILED
    assert "intent_declined" in result.signal_names
    assert "identity_confirmed" in result.signal_names
    assert "intent_confirmed" not in result.signal_names


class TestTimersAndMarkers:
    async def test_watchdog_asks_the_vendor(self, harness: Build) -> None:
        """No final callback by the check timer: the vendor is asked; an unanswered call is retried."""
        router = respx.Router()
        router.post(CALLS).respond(201, json={"sid": "CA1", "status": "queued"})
        fetch = router.get(CALLS.replace(".json", "/CA1.json"))
        fetch.side_effect = [
            httpx.Response(503),
            httpx.Response(200, json={"sid": "CA1", "status": "ringing"}),
            httpx.Response(200, json={"sid": "CA1", "status": "no-answer"}),
        ]
        h = harness()
        channel = PhoneCallChannel([_twilio_behind(router)])
        outcome = await channel.start(_context(h))
        ((name, _),) = outcome.timers
        assert name == "check-1"
        state = outcome.state
        for _ in range(2):  # a vendor error, then a call still ringing: look later
            outcome = await channel.handle(
                _context(h), state, TimerDue(name=name, at=h.clock.now())
            )
            assert isinstance(outcome, Waiting)
            assert [n for n, _ in outcome.timers] == ["check-1"]
            state = outcome.state
        outcome = await channel.handle(
            _context(h), state, TimerDue(name=name, at=h.clock.now())
        )
        assert isinstance(outcome, Waiting)
        assert [n for n, _ in outcome.timers] == ["dial-2"]
        assert "no_answer" in outcome.state.signals

    async def test_stale_timers_change_nothing(self, harness: Build) -> None:
        """A timer for another call, or of an unknown kind, leaves the state alone."""
        router = respx.Router()
        router.post(CALLS).respond(201, json={"sid": "CA1", "status": "queued"})
        h = harness()
        channel = PhoneCallChannel([_twilio_behind(router)])
        state = (await channel.start(_context(h))).state
        for name in ("check-7", "dial-1", "recording-1", "bogus"):
            outcome = await channel.handle(
                _context(h), state, TimerDue(name=name, at=h.clock.now())
            )
            assert outcome == Waiting(state=state)

    async def test_a_placed_marker_is_not_placed_again(self, harness: Build) -> None:
        """A retried start that finds its call already placed (shared marker) does not ring again."""
        router = respx.Router()
        create = router.post(CALLS).respond(
            201, json={"sid": "CA1", "status": "queued"}
        )
        h = harness()
        shared = MemoryStore()
        context = attrs.evolve(_context(h), shared=shared)
        channel = PhoneCallChannel([_twilio_behind(router)])
        first = await channel.start(context)
        again = await channel.start(context)
        assert create.call_count == 1
        assert again.state.current.call_id == first.state.current.call_id == "CA1"

    async def test_an_interrupted_placement_is_looked_up(self, harness: Build) -> None:
        """A marker left 'placing' by a crash is reconciled by looking the call up first."""
        router = respx.Router()
        create = router.post(CALLS).respond(
            201, json={"sid": "CA2", "status": "queued"}
        )
        router.get(CALLS).respond(
            200,
            json={
                "calls": [
                    {
                        "sid": "CA1",
                        "status": "ringing",
                        "to": "+8613800138000",
                        "date_created": "Mon, 05 Jan 2026 01:00:00 +0000",
                    }
                ]
            },
        )
        h = harness()
        shared = MemoryStore()
        await shared.put_value(
            "multiverify:phone-call:s:call:1:1", "placing", at=h.clock.now(), ttl=60
        )
        context = attrs.evolve(_context(h), shared=shared)
        outcome = await PhoneCallChannel([_twilio_behind(router)]).start(context)
        assert not create.called
        assert outcome.state.current.call_id == "CA1"

    async def test_submissions_are_refused_on_the_ivr(self, harness: Build) -> None:
        """An IVR call takes its answers from callbacks, not from Verifier.submit."""
        router = respx.Router()
        router.post(CALLS).respond(201, json={"sid": "CA1", "status": "queued"})
        h = harness()
        channel = PhoneCallChannel([_twilio_behind(router)])
        state = (await channel.start(_context(h))).state
        with pytest.raises(InvalidInputError, match="callbacks"):
            await channel.handle(_context(h), state, Submission(payload={"x": 1}))
        with pytest.raises(InvalidInputError, match="no call state"):
            await channel.handle(_context(h), None, Submission(payload={}))


class TestZones:
    async def test_the_phone_numbers_zones(self, harness: Build) -> None:
        """With zone = "phone" a US number is called only when it is allowed in all its zones."""
        router = respx.Router()
        create = router.post(CALLS).respond(
            201, json={"sid": "CA1", "status": "queued"}
        )
        h = harness(start=datetime(2026, 1, 5, 13, 0, tzinfo=UTC))  # 08:00 New York
        context = attrs.evolve(
            _context(h),
            applicant=attrs.evolve(h.applicant, phone="+14155550123"),
            options={"zone": "phone"},
        )
        outcome = await PhoneCallChannel([_twilio_behind(router)]).start(context)
        assert isinstance(outcome, Waiting)
        assert not create.called
        ((name, due),) = outcome.timers
        assert name == "dial-1"
        # 08:00 in Los Angeles (and later still, should the region span more zones).
        assert due >= datetime(2026, 1, 5, 16, 0, tzinfo=UTC)
        assert "America/Los_Angeles" in outcome.state.zones

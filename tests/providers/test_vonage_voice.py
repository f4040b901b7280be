"""Tests for the Vonage voice provider (respx) and NCCO rendering, against Vonage's documented wire format.

Sources: Vonage's OpenAPI description of Voice API v1 (``Nexmo/api-specification``
``definitions/voice.yml``, 1.3.6), the NCCO reference and the webhook
reference on developer.vonage.com.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from multiverify.exceptions import (
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from multiverify.providers import (
    AnsweredBy,
    CallRequest,
    CallRoute,
    CallStatus,
    Gather,
    VoiceInstruction,
    VonageApplication,
    VonageVoice,
    ncco,
)
from multiverify.providers._voice import verified_query
from multiverify.testing import FakeClock

T0 = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
CALLS = "https://api.nexmo.com/v1/calls"
UUID = "63f61863-4a51-4f6b-86e1-46edebcf9356"
ROUTE = CallRoute(session_id="s1", step_id="call", attempt=1, call=2)
HOOK = "https://app.example/hooks/voice"
KEY = "callback-key"


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    """The application's RSA key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def voice(private_key: rsa.RSAPrivateKey, client: httpx.AsyncClient) -> VonageVoice:
    """A VonageVoice whose HTTP goes to the test's router."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return VonageVoice(
        application=VonageApplication(
            application_id="app-1",
            private_key=pem,
            clock=FakeClock(T0),
            new_jti=lambda: "jti-1",
        ),
        from_number="+8610555010",
        callback_url=HOOK,
        callback_key=KEY,
        client=client,
    )


class TestPlaceCall:
    async def test_create_body(self, voice: VonageVoice, router: respx.Router) -> None:
        """The create posts the documented JSON: phone endpoints without +, answer and event URLs, timers, AMD."""
        route = router.post(CALLS).respond(
            201,
            json={
                "uuid": UUID,
                "status": "started",
                "direction": "outbound",
                "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
            },
        )

        info = await voice.place_call(
            CallRequest(
                to="+8613800138000", route=ROUTE, ring_timeout=300, time_limit=9000
            )
        )

        assert info.call_id == UUID
        assert info.status is CallStatus.QUEUED
        assert info.provider == "vonage"
        request = route.calls.last.request
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.content)
        assert body["to"] == [{"type": "phone", "number": "8613800138000"}]
        assert body["from"] == {"type": "phone", "number": "8610555010"}
        assert body["answer_method"] == body["event_method"] == "POST"
        assert body["machine_detection"] == "continue"
        # The spec's ranges: ringing_timer 1-120, length_timer 1-7200.
        assert body["ringing_timer"] == 120
        assert body["length_timer"] == 7200
        (answer,) = body["answer_url"]
        (event,) = body["event_url"]
        assert verified_query(answer, KEY, vendor="vonage")["event"] == "answer"
        assert verified_query(event, KEY, vendor="vonage") == {
            "session_id": "s1",
            "step_id": "call",
            "attempt": "1",
            "call": "2",
            "event": "status",
        }

    async def test_without_machine_detection(
        self, voice: VonageVoice, router: respx.Router
    ) -> None:
        """Without answering-machine detection the create sends no machine_detection."""
        route = router.post(CALLS).respond(
            201, json={"uuid": UUID, "status": "started"}
        )

        await voice.place_call(
            CallRequest(to="+8613800138000", route=ROUTE, machine_detection=False)
        )

        assert "machine_detection" not in json.loads(route.calls.last.request.content)

    async def test_application_jwt(
        self,
        voice: VonageVoice,
        router: respx.Router,
        private_key: rsa.RSAPrivateKey,
    ) -> None:
        """Each request carries Authorization: Bearer, an RS256 application JWT."""
        route = router.post(CALLS).respond(
            201, json={"uuid": UUID, "status": "started"}
        )

        await voice.place_call(CallRequest(to="+8613800138000", route=ROUTE))

        scheme, token = route.calls.last.request.headers["authorization"].split(" ")
        assert scheme == "Bearer"
        assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT"}
        claims = jwt.decode(
            token,
            private_key.public_key(),
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims["application_id"] == "app-1"
        assert claims["exp"] - claims["iat"] == 900

    async def test_answer_without_uuid(
        self, voice: VonageVoice, router: respx.Router
    ) -> None:
        """A create answer without a uuid is an unavailable vendor, not a call."""
        router.post(CALLS).respond(201, json={"status": "started"})

        with pytest.raises(ProviderUnavailableError, match="no uuid"):
            await voice.place_call(CallRequest(to="+8613800138000", route=ROUTE))


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            (400, ProviderRejectedError),
            (401, ProviderAuthError),
            (403, ProviderAuthError),
            (500, ProviderUnavailableError),
            (503, ProviderUnavailableError),
        ],
    )
    async def test_problem_json(
        self,
        voice: VonageVoice,
        router: respx.Router,
        status: int,
        kind: type[Exception],
    ) -> None:
        """An RFC 7807 answer maps to the error taxonomy, with Vonage's title and detail."""
        router.post(CALLS).respond(
            status,
            json={
                "type": "https://developer.nexmo.com/api-errors#bad-request",
                "title": "Bad Request",
                "detail": "The request failed due to validation errors",
            },
        )

        with pytest.raises(kind) as caught:
            await voice.place_call(CallRequest(to="+8613800138000", route=ROUTE))

        assert "Bad Request The request failed" in str(caught.value)

    async def test_rate_limited_with_retry_after(
        self, voice: VonageVoice, router: respx.Router
    ) -> None:
        """429 is a retryable rate limit carrying Retry-After."""
        router.post(CALLS).respond(
            429, headers={"Retry-After": "7"}, json={"title": "Too Many Requests"}
        )

        with pytest.raises(ProviderRateLimitedError) as caught:
            await voice.place_call(CallRequest(to="+8613800138000", route=ROUTE))

        assert caught.value.retry_after == 7.0
        assert caught.value.retryable

    async def test_server_error_is_uncertain(
        self, voice: VonageVoice, router: respx.Router
    ) -> None:
        """A 5xx on create may have placed the call: the error says so."""
        router.post(CALLS).respond(502, text="bad gateway")

        with pytest.raises(ProviderUnavailableError) as caught:
            await voice.place_call(CallRequest(to="+8613800138000", route=ROUTE))

        assert caught.value.uncertain
        assert "HTTP 502" in str(caught.value)

    @pytest.mark.parametrize("body", ['["x"]', "[" * 100_000])
    async def test_body_not_an_object(
        self, voice: VonageVoice, router: respx.Router, body: str
    ) -> None:
        """A success whose body is not a JSON object (or nests too deeply) is refused."""
        router.get(f"{CALLS}/{UUID}").respond(200, text=body)

        with pytest.raises(ProviderUnavailableError, match="not a JSON object"):
            await voice.get_call(UUID)

    async def test_transport_error(
        self, voice: VonageVoice, router: respx.Router
    ) -> None:
        """A connection failure is an unavailable vendor."""
        router.get(f"{CALLS}/{UUID}").mock(side_effect=httpx.ConnectError("down"))

        with pytest.raises(ProviderUnavailableError):
            await voice.get_call(UUID)


class TestCalls:
    async def test_get_call(self, voice: VonageVoice, router: respx.Router) -> None:
        """GET /v1/calls/{uuid} reads status, number, start time and duration."""
        router.get(f"{CALLS}/{UUID}").respond(
            200,
            json={
                "uuid": UUID,
                "status": "completed",
                "direction": "outbound",
                "to": {"type": "phone", "number": "8613800138000"},
                "from": {"type": "phone", "number": "8610555010"},
                "duration": "60",
                "start_time": "2026-01-05 01:00:00",
                "end_time": "2026-01-05 01:01:00",
            },
        )

        info = await voice.get_call(UUID)

        assert info.status is CallStatus.COMPLETED
        assert info.to == "+8613800138000"
        assert info.duration == 60.0
        assert info.created_at == T0

    @pytest.mark.parametrize(
        ("status", "expected", "answered_by"),
        [
            ("machine", CallStatus.IN_PROGRESS, AnsweredBy.MACHINE),
            ("human", CallStatus.IN_PROGRESS, AnsweredBy.HUMAN),
            ("rejected", CallStatus.BUSY, None),
            ("unanswered", CallStatus.NO_ANSWER, None),
            ("timeout", CallStatus.NO_ANSWER, None),
            ("cancelled", CallStatus.CANCELED, None),
            ("something-new", CallStatus.FAILED, None),
        ],
    )
    async def test_statuses(
        self,
        voice: VonageVoice,
        router: respx.Router,
        status: str,
        expected: CallStatus,
        answered_by: AnsweredBy | None,
    ) -> None:
        """Vonage's call states map to the common ones; machine and human carry AMD's finding."""
        router.get(f"{CALLS}/{UUID}").respond(
            200, json={"uuid": UUID, "status": status}
        )

        info = await voice.get_call(UUID)

        assert info.status is expected
        assert info.answered_by is answered_by

    async def test_find_calls(self, voice: VonageVoice, router: respx.Router) -> None:
        """Calls are listed from date_start, newest first, and filtered to the number."""
        route = router.get(CALLS).respond(
            200,
            json={
                "count": 2,
                "_embedded": {
                    "calls": [
                        {
                            "uuid": UUID,
                            "status": "ringing",
                            "to": {"type": "phone", "number": "8613800138000"},
                        },
                        {
                            "uuid": "other",
                            "status": "completed",
                            "to": {"type": "phone", "number": "8613900000000"},
                        },
                        "junk",
                    ]
                },
            },
        )

        found = await voice.find_calls(to="+8613800138000", since=T0)

        assert [c.call_id for c in found] == [UUID]
        params = route.calls.last.request.url.params
        assert params["date_start"] == "2026-01-05T01:00:00Z"
        assert params["order"] == "desc"
        assert params["page_size"] == "100"

    async def test_find_calls_without_list(
        self, voice: VonageVoice, router: respx.Router
    ) -> None:
        """An answer with no _embedded calls finds nothing."""
        router.get(CALLS).respond(200, json={"count": 0})

        assert await voice.find_calls(to="+8613800138000", since=T0) == []

    async def test_hang_up(self, voice: VonageVoice, router: respx.Router) -> None:
        """Hang-up is PUT /v1/calls/{uuid} with action hangup; Vonage answers 204."""
        route = router.put(f"{CALLS}/{UUID}").respond(204)

        await voice.hang_up(UUID)

        assert json.loads(route.calls.last.request.content) == {"action": "hangup"}

    async def test_hang_up_unknown_call(
        self, voice: VonageVoice, router: respx.Router
    ) -> None:
        """Hanging up a call Vonage does not know is a rejection (404)."""
        router.put(f"{CALLS}/{UUID}").respond(404, json={"title": "Not Found"})

        with pytest.raises(ProviderRejectedError, match="Not Found"):
            await voice.hang_up(UUID)

    async def test_own_client_is_closed(self, private_key: rsa.RSAPrivateKey) -> None:
        """A client the provider made is closed by aclose; the repr names the provider."""
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        voice = VonageVoice(
            application=VonageApplication(application_id="a", private_key=pem),
            from_number="+8610555010",
            callback_url=HOOK,
            callback_key=KEY,
            name="vonage-cn",
        )
        assert repr(voice) == "<multiverify.providers.VonageVoice(vonage-cn)>"
        await voice.aclose()
        assert voice._client.is_closed


class TestNcco:
    def test_talk_and_dtmf_input(self) -> None:
        """A DTMF prompt is talk (bargeIn) then input type dtmf with maxDigits and timeOut."""
        actions = ncco(
            VoiceInstruction(
                turn=3,
                language="zh-CN",
                say=["您好。", "请输入"],
                gather=Gather(num_digits=4, timeout=30),
            ),
            event_url="https://app/x?turn=3",
        )

        assert actions == [
            {
                "action": "talk",
                "text": "您好。 请输入",
                "language": "cmn-CN",
                "bargeIn": True,
            },
            {
                "action": "input",
                "eventUrl": ["https://app/x?turn=3"],
                "eventMethod": "POST",
                "type": ["dtmf"],
                "dtmf": {"timeOut": 10, "maxDigits": 4},
            },
        ]

    def test_open_length_submits_on_hash(self) -> None:
        """Digits of no fixed length end with #, up to Vonage's 20."""
        (_, entry) = ncco(
            VoiceInstruction(turn=1, language="en", say=["Enter"], gather=Gather()),
            event_url="https://app/x",
        )

        assert entry["dtmf"] == {"timeOut": 8, "submitOnHash": True, "maxDigits": 20}

    def test_speech_input(self) -> None:
        """A spoken answer is input type speech with a BCP-47 language and hints."""
        (talk, entry) = ncco(
            VoiceInstruction(
                turn=1,
                language="zh-CN",
                say=["借款用途是什么"],
                gather=Gather(input="dtmf speech", timeout=90, hints=["装修"]),
            ),
            event_url="https://app/x",
        )

        assert talk["language"] == "cmn-CN"
        assert entry["type"] == ["speech", "dtmf"]
        assert entry["speech"] == {
            "language": "zh-CN",
            "endOnSilence": 2,
            "maxDuration": 60,
            "context": ["装修"],
        }
        assert entry["dtmf"]["submitOnHash"] is True

    def test_record_comes_first(self) -> None:
        """A recorded call's first NCCO starts with record, before the disclosure is spoken."""
        actions = ncco(
            VoiceInstruction(
                turn=1,
                language="en",
                say=["This call is recorded."],
                gather=Gather(num_digits=1),
                record=True,
            ),
            event_url="https://app/gather",
            recording_url="https://app/recording",
        )

        assert actions[0] == {
            "action": "record",
            "eventUrl": ["https://app/recording"],
            "eventMethod": "POST",
        }
        assert actions[1]["language"] == "en-US"
        assert actions[1]["text"] == "This call is recorded."

    def test_goodbye(self) -> None:
        """A closing instruction is a talk without bargeIn and no input: the call ends."""
        assert ncco(
            VoiceInstruction(turn=9, language="en", say=["Bye"], hangup=True),
            event_url="https://app/x",
        ) == [{"action": "talk", "text": "Bye", "language": "en-US"}]


class TestGoodbye:
    async def test_answered_call_is_transferred_to_a_goodbye(
        self, voice: VonageVoice, router: respx.Router
    ) -> None:
        """A live call hears the goodbye: PUT transfer with an NCCO destination, per the spec."""
        router.get(f"{CALLS}/{UUID}").respond(
            200, json={"uuid": UUID, "status": "answered"}
        )
        put = router.put(f"{CALLS}/{UUID}").respond(204)

        await voice.hang_up(
            UUID,
            goodbye=VoiceInstruction(
                turn=5, language="zh-CN", say=["再见。"], hangup=True, record=True
            ),
        )

        assert json.loads(put.calls.last.request.content) == {
            "action": "transfer",
            "destination": {
                "type": "ncco",
                "ncco": [{"action": "talk", "text": "再见。", "language": "cmn-CN"}],
            },
        }

    @pytest.mark.parametrize(
        ("status", "sent"),
        [("ringing", {"action": "hangup"}), ("completed", None)],
        ids=["ringing", "over"],
    )
    async def test_nobody_to_hear_it(
        self,
        voice: VonageVoice,
        router: respx.Router,
        status: str,
        sent: dict[str, str] | None,
    ) -> None:
        """A ringing call is hung up without a goodbye; one already over is left alone."""
        router.get(f"{CALLS}/{UUID}").respond(
            200, json={"uuid": UUID, "status": status}
        )
        put = router.put(f"{CALLS}/{UUID}").respond(204)

        await voice.hang_up(
            UUID, goodbye=VoiceInstruction(turn=1, language="en", say=["Bye"])
        )

        if sent is None:
            assert not put.called
        else:
            assert json.loads(put.calls.last.request.content) == sent

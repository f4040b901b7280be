"""Tests for the Veriff provider: HMAC vectors, session creation, decision polling and parsing."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multiverify.exceptions import (
    ProviderAuthError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from multiverify.providers import (
    DocumentHolder,
    HolderKey,
    Veriff,
    VideoDecision,
    VideoSession,
    VideoSessionRequest,
    VideoStatus,
    parse_veriff_decision,
    veriff_signature,
)

SECRET = "abcdef12-abcd-abcd-abcd-abcdef012345"
BASE = "https://stationapi.veriff.com"
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def request() -> VideoSessionRequest:
    """A session request for attempt 1 of step ``video`` of session ``s1``."""
    return VideoSessionRequest(
        reference="s1:video:1",
        applicant_id="a-42",
        name="Wang Fang",
        national_id="110101199003072420",
        statement="I confirm.",
        locale="en",
        expires_at=T0,
    )


def session() -> VideoSession:
    """A Veriff session as the provider created it."""
    return VideoSession(
        provider="veriff",
        session_id="aea9ba6d-1b47-47fc-a4fc-f72b6d3584a7",
        url="https://alchemy.veriff.com/v/abc",
        expires_at=T0,
    )


class TestVeriffSignature:
    def test_vector_v1(self) -> None:
        """V1: the current docs' session body signs to the documented digest."""
        body = (
            '{"verification":{"callback":"https://veriff.com","person":{"firstName":"John",'
            '"lastName":"Smith"},"document":{"type":"PASSPORT","country":"EE"},'
            '"vendorData":"unique id of the end-user","timestamp":"2016-05-19T08:30:25.597Z"}}'
        )
        assert veriff_signature(SECRET, body.encode()) == (
            "0dcab73ddd20062616d104231c7439657546a5c24e4691977da93bb854c31e25"
        )

    def test_vector_v2(self) -> None:
        """V2: the older docs' wording of the same body signs to its digest."""
        body = (
            '{"verification":{"callback":"https://veriff.com","person":{"firstName":"John",'
            '"lastName":"Smith"},"document":{"type":"PASSPORT","country":"EE"},'
            '"vendorData":"unique id of a user","timestamp":"2016-05-19T08:30:25.597Z"}}'
        )
        assert veriff_signature(SECRET, body) == (
            "6af6d95822e19e9cc707aec55395d8d363ba2c7bc4625bc04ebeca0c7bf8cd67"
        )

    def test_vector_v3_session_id(self) -> None:
        """V3: a GET signs the session id."""
        assert veriff_signature(SECRET, "aea9ba6d-1b47-47fc-a4fc-f72b6d3584a7") == (
            "895cb3fd31139d89aeb7b263682e15479ab57651e70591256ad2c14fde4950dd"
        )


@pytest.fixture
async def veriff() -> AsyncIterator[tuple[Veriff, respx.Router]]:
    """A Veriff provider on a respx router."""
    router = respx.Router(assert_all_called=True)
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(router.async_handler)
    ) as client:
        yield (
            Veriff(
                api_key="key-1",
                shared_secret=SECRET,
                callback="https://app.example/done",
                client=client,
            ),
            router,
        )


def created(**overrides: Any) -> dict[str, Any]:
    """Veriff's answer to ``POST /v1/sessions``."""
    verification = {
        "id": "f04bdb47-d3be-4b28-b028-a652feb060b5",
        "url": "https://alchemy.veriff.com/v/sample",
        "vendorData": "s1:video:1",
        "host": "https://alchemy.veriff.com",
        "status": "created",
        "sessionToken": "token",
    }
    verification.update(overrides)
    return {"status": "success", "verification": verification}


def decision_body(**overrides: Any) -> dict[str, Any]:
    """A decision's ``verification`` object, as in the docs, with the person left in."""
    verification: dict[str, Any] = {
        "id": "aea9ba6d-1b47-47fc-a4fc-f72b6d3584a7",
        "attemptId": "e30122d1-740b-4764-853f-470374a7abf4",
        "vendorData": "s1:video:1",
        "status": "approved",
        "code": 9001,
        "reason": None,
        "reasonCode": None,
        "decisionTime": "2019-11-06T07:18:36.916Z",
        "acceptanceTime": "2019-11-06T07:15:27.000Z",
        "person": {"firstName": "SARAH", "lastName": "MORGAN", "idNumber": "X1"},
        "document": {"type": "DRIVERS_LICENSE", "number": "MORGA753116SM9IJ"},
    }
    verification.update(overrides)
    return verification


class TestCreateSession:
    async def test_signed_request_and_session(
        self, veriff: tuple[Veriff, respx.Router]
    ) -> None:
        """The body carries vendorData, endUserId and callback; the HMAC covers its exact bytes."""
        provider, router = veriff
        route = router.post(f"{BASE}/v1/sessions").respond(201, json=created())

        made = await provider.create_session(request())

        sent = route.calls.last.request
        assert sent.headers["x-auth-client"] == "key-1"
        assert sent.headers["content-type"] == "application/json"
        expected = hmac.new(SECRET.encode(), sent.content, hashlib.sha256).hexdigest()
        assert sent.headers["x-hmac-signature"] == expected
        body = json.loads(sent.content)["verification"]
        assert body["vendorData"] == "s1:video:1"
        assert body["callback"] == "https://app.example/done"
        assert len(body["endUserId"]) == 36
        assert "person" not in body  # no personal data leaves for Veriff
        assert made == VideoSession(
            provider="veriff",
            session_id="f04bdb47-d3be-4b28-b028-a652feb060b5",
            url="https://alchemy.veriff.com/v/sample",
            expires_at=T0,
        )

    async def test_end_user_id_is_stable(
        self, veriff: tuple[Veriff, respx.Router]
    ) -> None:
        """Two sessions of one applicant carry the same endUserId."""
        provider, router = veriff
        route = router.post(f"{BASE}/v1/sessions").respond(201, json=created())
        await provider.create_session(request())
        await provider.create_session(request())
        ids = {
            json.loads(c.request.content)["verification"]["endUserId"]
            for c in route.calls
        }
        assert len(ids) == 1

    @pytest.mark.parametrize(
        ("status", "error", "retryable"),
        [
            (401, ProviderAuthError, False),
            (400, ProviderRejectedError, False),
            (503, ProviderUnavailableError, True),
        ],
    )
    async def test_errors_are_mapped(
        self,
        veriff: tuple[Veriff, respx.Router],
        status: int,
        error: type[Exception],
        retryable: bool,
    ) -> None:
        """Veriff's error body becomes a typed error with its code and message."""
        provider, router = veriff
        router.post(f"{BASE}/v1/sessions").respond(
            status, json={"status": "fail", "code": 1102, "message": "Mandatory"}
        )
        with pytest.raises(error, match="Mandatory") as info:
            await provider.create_session(request())
        assert getattr(info.value, "code", None) == "1102"
        assert getattr(info.value, "retryable", None) is retryable

    @pytest.mark.parametrize(
        ("answer", "field"),
        [
            ({"status": "success"}, "verification"),
            (created(id=""), "verification.id"),
            (created(url=None), "verification.url"),
            (created(url="http://insecure.example"), "verification.url"),
        ],
    )
    async def test_partial_answer(
        self,
        veriff: tuple[Veriff, respx.Router],
        answer: dict[str, Any],
        field: str,
    ) -> None:
        """An answer without a session id or an https URL is a ProviderResponseError."""
        provider, router = veriff
        router.post(f"{BASE}/v1/sessions").respond(201, json=answer)
        with pytest.raises(ProviderResponseError) as info:
            await provider.create_session(request())
        assert info.value.field == field
        assert info.value.retryable is False

    @pytest.mark.parametrize("body", ["<html>", "[" * 100_000])
    async def test_body_not_json(
        self, veriff: tuple[Veriff, respx.Router], body: str
    ) -> None:
        """A 200 that is not a JSON object is a retryable ProviderUnavailableError."""
        provider, router = veriff
        router.post(f"{BASE}/v1/sessions").respond(200, text=body)
        with pytest.raises(ProviderUnavailableError, match="not a JSON object"):
            await provider.create_session(request())

    async def test_error_without_body(
        self, veriff: tuple[Veriff, respx.Router]
    ) -> None:
        """An error status without a JSON body still maps by status."""
        provider, router = veriff
        router.post(f"{BASE}/v1/sessions").respond(500, text="oops")
        with pytest.raises(ProviderUnavailableError, match="HTTP 500"):
            await provider.create_session(request())


class TestFetchDecision:
    async def test_signed_over_session_id(
        self, veriff: tuple[Veriff, respx.Router]
    ) -> None:
        """The GET carries the HMAC of the session id (vector V3's id)."""
        provider, router = veriff
        route = router.get(
            f"{BASE}/v1/sessions/{session().session_id}/decision"
        ).respond(200, json={"status": "success", "verification": None})
        assert await provider.fetch_decision(session()) is None
        assert route.calls.last.request.headers["x-hmac-signature"] == (
            "895cb3fd31139d89aeb7b263682e15479ab57651e70591256ad2c14fde4950dd"
        )

    async def test_progress_is_no_decision(
        self, veriff: tuple[Veriff, respx.Router]
    ) -> None:
        """A session still ``submitted`` has no decision yet."""
        provider, router = veriff
        router.get(f"{BASE}/v1/sessions/{session().session_id}/decision").respond(
            200, json={"verification": decision_body(status="submitted", code=7002)}
        )
        assert await provider.fetch_decision(session()) is None

    async def test_decision(self, veriff: tuple[Veriff, respx.Router]) -> None:
        """A decision comes back without the person or the document."""
        provider, router = veriff
        router.get(f"{BASE}/v1/sessions/{session().session_id}/decision").respond(
            200, json={"status": "success", "verification": decision_body()}
        )
        decision = await provider.fetch_decision(session())
        assert decision is not None
        assert decision.status is VideoStatus.APPROVED
        assert decision.liveness is True
        assert decision.face_match is True
        data = json.dumps(decision.to_data())
        for value in ("SARAH", "MORGAN", "X1", "MORGA753116SM9IJ"):
            assert value not in data
        assert decision.media == (
            f"{BASE}/v1/sessions/aea9ba6d-1b47-47fc-a4fc-f72b6d3584a7/media",
        )

    async def test_decision_holder_digested(
        self, veriff: tuple[Veriff, respx.Router]
    ) -> None:
        """A polled approval carries the document's holder as digests under the provider's key."""
        provider, router = veriff
        router.get(f"{BASE}/v1/sessions/{session().session_id}/decision").respond(
            200, json={"status": "success", "verification": decision_body()}
        )
        decision = await provider.fetch_decision(session())
        assert decision is not None
        assert provider.holder_key.key_id == HolderKey(SECRET).key_id
        assert decision.holder == DocumentHolder.read(
            HolderKey(SECRET),
            given_name="SARAH",
            family_name="MORGAN",
            national_id="X1",
            document_number="MORGA753116SM9IJ",
        )

    @pytest.mark.parametrize("body", [{"status": "success"}, {"verification": [1]}])
    async def test_malformed(
        self, veriff: tuple[Veriff, respx.Router], body: dict[str, Any]
    ) -> None:
        """A body without a verification object is a ProviderResponseError."""
        provider, router = veriff
        router.get(f"{BASE}/v1/sessions/{session().session_id}/decision").respond(
            200, json=body
        )
        with pytest.raises(ProviderResponseError):
            await provider.fetch_decision(session())

    async def test_unknown_session(self, veriff: tuple[Veriff, respx.Router]) -> None:
        """404 is a permanent rejection."""
        provider, router = veriff
        router.get(f"{BASE}/v1/sessions/{session().session_id}/decision").respond(
            404, json={"status": "fail", "code": 1404, "message": "Not found"}
        )
        with pytest.raises(ProviderRejectedError, match="Not found"):
            await provider.fetch_decision(session())


class TestLifecycle:
    async def test_owned_client_is_closed(self) -> None:
        """A provider that built its client closes it; an injected one stays open."""
        own = Veriff(api_key="k", shared_secret="s")
        await own.aclose()
        assert own._client.is_closed
        async with httpx.AsyncClient() as client:
            lent = Veriff(api_key="k", shared_secret="s", client=client)
            await lent.aclose()
            assert not client.is_closed

    def test_repr_and_limits(self) -> None:
        """The repr names the integration URL, never the key; sessions live seven days."""
        provider = Veriff(api_key="secret-key", shared_secret="s", base_url=BASE + "/")
        assert repr(provider) == f"<multiverify.providers.Veriff(veriff, {BASE})>"
        assert provider.name == "veriff"
        assert provider.max_lifetime == 7 * 24 * 3600


class TestParseVeriffDecision:
    @pytest.mark.parametrize(
        ("code", "status"),
        [
            (9001, VideoStatus.APPROVED),
            (9102, VideoStatus.DECLINED),
            (9103, VideoStatus.RESUBMISSION_REQUESTED),
            (9104, VideoStatus.EXPIRED),
            ("9121", VideoStatus.ABANDONED),
        ],
    )
    def test_code_when_status_is_missing(
        self, code: object, status: VideoStatus
    ) -> None:
        """Without a status the documented code decides."""
        body = decision_body(code=code)
        del body["status"]
        assert parse_veriff_decision(body).status is status

    def test_status_wins_over_code(self) -> None:
        """A status and a disagreeing code: the status decides."""
        parsed = parse_veriff_decision(decision_body(status="review", code=9121))
        assert parsed.status is VideoStatus.REVIEW

    @pytest.mark.parametrize(
        ("reason_code", "liveness", "face", "document"),
        [
            (103, None, False, None),
            ("120", None, False, None),
            (504, False, None, None),
            (102, None, None, False),
            (105, None, None, None),
        ],
    )
    def test_decline_reasons(
        self,
        reason_code: object,
        liveness: bool | None,
        face: bool | None,
        document: bool | None,
    ) -> None:
        """Reason codes say which check failed."""
        parsed = parse_veriff_decision(
            decision_body(
                status="declined", code=9102, reasonCode=reason_code, reason="why"
            )
        )
        assert (parsed.liveness, parsed.face_match, parsed.document_valid) == (
            liveness,
            face,
            document,
        )
        assert parsed.reason_code == str(reason_code)
        assert parsed.reason == "why"

    def test_approval_drops_a_stale_reason(self) -> None:
        """An approval repeating an earlier attempt's reason carries none."""
        parsed = parse_veriff_decision(
            decision_body(reasonCode=202, reason="Face not clearly visible")
        )
        assert (parsed.reason_code, parsed.reason) == (None, "")

    def test_fields(self) -> None:
        """Attempt id, time, code and score are read."""
        parsed = parse_veriff_decision(decision_body(decisionScore=0.93))
        assert parsed.attempt_id == "e30122d1-740b-4764-853f-470374a7abf4"
        assert parsed.code == "9001"
        assert parsed.decided_at == datetime(2019, 11, 6, 7, 18, 36, 916000, tzinfo=UTC)
        assert parsed.decision_score == 0.93

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (decision_body(id=None), "verification.id"),
            (decision_body(status="sleeping"), "verification.status"),
            (decision_body(status=None, code=1234), "verification.status"),
            (decision_body(decisionTime="yesterday"), "verification.decisionTime"),
            (decision_body(decisionTime=7), "verification.decisionTime"),
        ],
    )
    def test_malformed(self, body: dict[str, Any], field: str) -> None:
        """A decision without an id, a usable status or a readable time is refused."""
        with pytest.raises(ProviderResponseError) as info:
            parse_veriff_decision(body)
        assert info.value.field == field

    @settings(
        max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "status",
                    "code",
                    "reasonCode",
                    "reason",
                    "attemptId",
                    "decisionTime",
                    "decisionScore",
                ]
            ),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(),
                st.floats(allow_nan=True),
                st.text(max_size=12),
                st.sampled_from([s.value for s in VideoStatus]),
                st.lists(st.integers(), max_size=2),
            ),
        )
    )
    def test_total(self, body: dict[str, Any]) -> None:
        """Any object parses into a decision that round-trips, or is a ProviderResponseError."""
        try:
            parsed = parse_veriff_decision(body)
        except ProviderResponseError:
            return
        assert (
            VideoDecision.from_data(json.loads(json.dumps(parsed.to_data()))) == parsed
        )


class TestHolder:
    def test_approval_keeps_digests(self) -> None:
        """With a key, an approval's person and document become a DocumentHolder."""
        key = HolderKey(SECRET)
        body = decision_body(
            person={
                "firstName": "FANG",
                "lastName": "WANG",
                "fullName": "WANG FANG",
                "idNumber": "11010119900307242X",
                "dateOfBirth": "1990-03-07",
                "nationality": "CN",
            },
            document={"number": "11010119900307242X", "type": "ID_CARD"},
        )
        decision = parse_veriff_decision(body, holder_key=key)
        assert decision.holder == DocumentHolder.read(
            key,
            given_name="FANG",
            family_name="WANG",
            full_name="WANG FANG",
            national_id="11010119900307242X",
            document_number="11010119900307242X",
            date_of_birth="1990-03-07",
        )

    @pytest.mark.parametrize(
        "change",
        [
            {"person": None, "document": None},
            {"person": "FANG", "document": []},
            {"person": {"firstName": 7, "idNumber": None}},
        ],
    )
    def test_nothing_read(self, change: dict[str, Any]) -> None:
        """A person or document that is missing, null or not text gives a holder with nothing known."""
        key = HolderKey(SECRET)
        body = decision_body(**change)
        if "document" not in change:
            body["document"] = None
        assert parse_veriff_decision(body, holder_key=key).holder == DocumentHolder(
            key_id=key.key_id
        )

    @pytest.mark.parametrize(
        "change",
        [
            {"status": "declined", "code": 9102, "reasonCode": 103},
            {"status": "resubmission_requested", "code": 9103, "reasonCode": 202},
            {"status": "review", "code": 9121},
        ],
    )
    def test_only_approvals(self, change: dict[str, Any]) -> None:
        """Declines, resubmissions and reviews keep no holder at all."""
        decision = parse_veriff_decision(
            decision_body(**change), holder_key=HolderKey(SECRET)
        )
        assert decision.holder is None

    def test_without_a_key(self) -> None:
        """Without a key (the function's default), nothing of the holder is kept."""
        assert parse_veriff_decision(decision_body()).holder is None

    def test_round_trip(self) -> None:
        """The holder survives the decision's event data."""
        decision = parse_veriff_decision(decision_body(), holder_key=HolderKey(SECRET))
        assert VideoDecision.from_data(decision.to_data()) == decision


class TestVideoDecisionData:
    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"provider": None}, "provider"),
            ({"status": "sleeping"}, "status"),
            ({"media": "one"}, "media"),
            ({"media": [1]}, "media"),
            ({"decided_at": "yesterday"}, "decided_at"),
            ({"liveness": "yes"}, "liveness"),
            ({"face_match_score": "high"}, "face_match_score"),
            ({"face_match_score": True}, "face_match_score"),
            ({"holder": "wang"}, "holder"),
            ({"holder": {"words": []}}, "holder.key_id"),
        ],
    )
    def test_malformed(self, change: dict[str, Any], field: str) -> None:
        """Event data that is not a decision is a ProviderResponseError naming the field."""
        data = VideoDecision(
            provider="veriff", session_id="s", status=VideoStatus.APPROVED
        ).to_data()
        data.update(change)
        with pytest.raises(ProviderResponseError) as info:
            VideoDecision.from_data(data)
        assert info.value.field == field

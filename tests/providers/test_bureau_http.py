"""Tests for the HTTP JSON bureau adapter: OAuth2, the request template, the mapping, the presets."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from multiverify import Address, Applicant, LoanApplication
from multiverify.exceptions import (
    ConfigurationError,
    InvalidInputError,
    ProviderAuthError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderUnavailableError,
    PullNotPermittedError,
)
from multiverify.providers import (
    BUREAU_PRESETS,
    BureauMapping,
    BureauReport,
    BureauRequest,
    FileStatus,
    HttpBureau,
    MatchResult,
    MatchRule,
    OAuth2Token,
    bureau_preset,
    read_path,
    template_fields,
)
from multiverify.testing import FakeClock

BASE = "https://bureau.example"
TOKEN_URL = "https://auth.bureau.example/oauth2/token"
T0 = datetime(2026, 2, 3, 10, 0, tzinfo=UTC)
CN_PATH = bureau_preset("cn-credit-gateway").path
US_PATH = bureau_preset("us-credit-profile").path


def cn_applicant() -> Applicant:
    """The applicant the CN fixture describes."""
    return Applicant(
        applicant_id="a-cn",
        name="王芳",
        national_id="110101199003072420",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="8000", currency="CNY", term_months=12, purpose="laptop"
        ),
    )


def us_applicant(**changes: Any) -> Applicant:
    """The applicant the US fixture describes."""
    fields: dict[str, Any] = {
        "applicant_id": "a-us",
        "name": "Jon Q Consumer",
        "national_id": "666-12-3456",
        "phone": "+12125550100",
        "date_of_birth": date(1980, 1, 15),
        "timezone": "America/New_York",
        "loan": LoanApplication(
            amount="2000", currency="USD", term_months=12, purpose="car repair"
        ),
    }
    fields.update(changes)
    return Applicant(**fields)


def request(applicant: Applicant | None = None) -> BureauRequest:
    """A pull for attempt 1 of step ``bureau`` of session ``s1``."""
    return BureauRequest(
        reference="s1:bureau:1",
        applicant=applicant or cn_applicant(),
        purpose="loan_approval",
        consent="consent-7",
    )


def token(**changes: Any) -> OAuth2Token:
    """Client credentials, HTTP Basic."""
    fields: dict[str, Any] = {
        "url": TOKEN_URL,
        "client_id": "client-1",
        "client_secret": "s3cret",
    }
    fields.update(changes)
    return OAuth2Token(**fields)


def bureau(
    client: httpx.AsyncClient,
    clock: FakeClock | None = None,
    preset: str = "cn-credit-gateway",
    **settings: Any,
) -> HttpBureau:
    settings.setdefault("token", token())
    return HttpBureau(
        preset, base_url=BASE, client=client, clock=clock or FakeClock(T0), **settings
    )


def granted(value: str = "tok-1", expires_in: Any = 3600) -> httpx.Response:
    return httpx.Response(
        200,
        json={"access_token": value, "token_type": "Bearer", "expires_in": expires_in},
    )


def sample(name: str = "cn-credit-gateway") -> dict[str, Any]:
    return bureau_preset(name).sample()


def read(
    body: Any, *, preset: str = "cn-credit-gateway", applicant: Applicant | None = None
) -> BureauReport:
    mapping = bureau_preset(preset).mapping
    return mapping.read(
        body,
        provider="b",
        preset=preset,
        request=request(
            applicant or (cn_applicant() if preset.startswith("cn") else us_applicant())
        ),
        pulled_at=T0,
    )


class TestOAuth2:
    async def test_client_credentials_with_basic_auth(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """The token request is a form POST with the client in HTTP Basic; the pull carries the Bearer."""
        auth = router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        report = await bureau(client).pull(request())
        assert report.report_id == "CR20260203101500000042"
        sent = auth.calls.last.request
        assert parse_qs(sent.content.decode()) == {"grant_type": ["client_credentials"]}
        expected = base64.b64encode(b"client-1:s3cret").decode()
        assert sent.headers["authorization"] == f"Basic {expected}"
        assert pull.calls.last.request.headers["authorization"] == "Bearer tok-1"

    async def test_password_grant_in_the_body(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """The password grant sends the owner's credentials, and the client in the body when asked."""
        auth = router.post(TOKEN_URL).mock(return_value=granted())
        router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        config = token(
            grant="password",
            username="portal-user",
            password="portal-pass",
            client_auth="body",
            scope="openid",
        )
        await bureau(client, token=config).pull(request())
        form = parse_qs(auth.calls.last.request.content.decode())
        assert form == {
            "grant_type": ["password"],
            "username": ["portal-user"],
            "password": ["portal-pass"],
            "scope": ["openid"],
            "client_id": ["client-1"],
            "client_secret": ["s3cret"],
        }
        assert "authorization" not in auth.calls.last.request.headers
        assert "portal-pass" not in repr(config)

    async def test_token_is_cached_until_expiry_minus_skew(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A token is reused until ``expires_in - skew``, then fetched again."""
        auth = router.post(TOKEN_URL).mock(
            side_effect=[granted("tok-1", 600), granted("tok-2", "600")]
        )
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        clock = FakeClock(T0)
        adapter = bureau(client, clock, token=token(skew=60))
        await adapter.pull(request())
        await clock.advance(539)
        await adapter.pull(request())
        assert auth.call_count == 1
        await clock.advance(1)
        await adapter.pull(request())
        assert auth.call_count == 2
        assert adapter.token_requests == 2
        assert [c.request.headers["authorization"] for c in pull.calls] == [
            "Bearer tok-1",
            "Bearer tok-1",
            "Bearer tok-2",
        ]

    async def test_token_without_expiry_uses_the_default_ttl(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A token without ``expires_in`` lives ``default_ttl`` minus the skew."""
        auth = router.post(TOKEN_URL).mock(
            return_value=httpx.Response(200, json={"access_token": "t"})
        )
        router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        clock = FakeClock(T0)
        adapter = bureau(client, clock, token=token(default_ttl=120, skew=20))
        await adapter.pull(request())
        await clock.advance(99)
        await adapter.pull(request())
        await clock.advance(1)
        await adapter.pull(request())
        assert auth.call_count == 2

    async def test_refreshed_once_on_401(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A 401 on the pull fetches a fresh token and repeats the pull once, same idempotency key."""
        router.post(TOKEN_URL).mock(side_effect=[granted("old"), granted("new")])
        pull = router.post(BASE + CN_PATH).mock(
            side_effect=[
                httpx.Response(401, json={"error": "invalid_token"}),
                httpx.Response(200, json=sample()),
            ]
        )
        report = await bureau(client).pull(request())
        assert report.file is FileStatus.HIT
        assert [c.request.headers["authorization"] for c in pull.calls] == [
            "Bearer old",
            "Bearer new",
        ]
        assert {c.request.headers["idempotency-key"] for c in pull.calls} == {
            "s1:bureau:1"
        }

    async def test_a_second_401_is_an_auth_error(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A fresh token refused too is a ProviderAuthError, after exactly two pulls."""
        router.post(TOKEN_URL).mock(side_effect=[granted("a"), granted("b")])
        pull = router.post(BASE + CN_PATH).mock(return_value=httpx.Response(401))
        with pytest.raises(ProviderAuthError) as caught:
            await bureau(client).pull(request())
        assert not caught.value.retryable
        assert pull.call_count == 2

    @pytest.mark.parametrize("status", [400, 401])
    async def test_refused_credentials(
        self, router: respx.Router, client: httpx.AsyncClient, status: int
    ) -> None:
        """invalid_client (400 per RFC 6749 §5.2, or 401) is a ProviderAuthError; no pull is made."""
        router.post(TOKEN_URL).mock(
            return_value=httpx.Response(status, json={"error": "invalid_client"})
        )
        pull = router.post(BASE + CN_PATH)
        with pytest.raises(ProviderAuthError):
            await bureau(client).pull(request())
        assert not pull.called

    async def test_token_endpoint_down_is_retryable(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A 503 from the token endpoint is a retryable ProviderUnavailableError."""
        router.post(TOKEN_URL).mock(return_value=httpx.Response(503))
        with pytest.raises(ProviderUnavailableError) as caught:
            await bureau(client).pull(request())
        assert caught.value.retryable

    @pytest.mark.parametrize(
        "answer",
        [
            httpx.Response(200, json={"token_type": "Bearer"}),
            httpx.Response(200, json={"access_token": ""}),
            httpx.Response(200, json=["tok"]),
            httpx.Response(200, text="<html>"),
        ],
    )
    async def test_malformed_token(
        self, router: respx.Router, client: httpx.AsyncClient, answer: httpx.Response
    ) -> None:
        """A token answer without an access_token is a ProviderResponseError."""
        router.post(TOKEN_URL).mock(return_value=answer)
        with pytest.raises(ProviderResponseError) as caught:
            await bureau(client).pull(request())
        assert caught.value.field == "access_token"

    def test_configuration(self) -> None:
        """The password grant needs its credentials; unknown grants and client auth are refused."""
        with pytest.raises(ConfigurationError, match="username and password"):
            token(grant="password")
        with pytest.raises(ConfigurationError, match="grant"):
            token(grant="implicit")
        with pytest.raises(ConfigurationError, match="client_auth"):
            token(client_auth="jwt")


class TestPull:
    async def test_cn_request_from_the_template(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """The CN template is filled from the applicant and the pull; static headers and the key go along."""
        router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        await bureau(client, headers={"X-Member": "m-1"}).pull(request())
        sent = pull.calls.last.request
        assert json.loads(sent.content) == {
            "name": "王芳",
            "idCard": "110101199003072420",
            "mobile": "13800138000",
            "queryReason": "loan_approval",
            "authorizationId": "consent-7",
            "requestNo": "s1:bureau:1",
        }
        assert sent.headers["x-member"] == "m-1"
        assert sent.headers["idempotency-key"] == "s1:bureau:1"
        assert sent.headers["content-type"] == "application/json"

    async def test_us_request_with_purpose_codes(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """The US template splits the name, formats the birth date; our purpose goes out as the bureau's code."""
        router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + US_PATH).mock(
            return_value=httpx.Response(200, json=sample("us-credit-profile"))
        )
        adapter = bureau(
            client,
            preset="us-credit-profile",
            purpose_codes={"loan_approval": "08"},
            idempotency_header="X-Request-Id",
        )
        report = await adapter.pull(request(us_applicant()))
        sent = json.loads(pull.calls.last.request.content)
        who = sent["consumerPii"]["primaryApplicant"]
        assert who["name"] == {"firstName": "Jon Q", "lastName": "Consumer"}
        assert who["dob"] == {"dob": "01151980"}
        assert who["ssn"] == {"ssn": "666-12-3456"}
        assert who["phone"] == [{"number": "2125550100", "type": "M"}]
        assert sent["permissiblePurpose"] == {"type": "08"}
        assert pull.calls.last.request.headers["x-request-id"] == "s1:bureau:1"
        assert report.identity.checked == (
            "name",
            "national_id",
            "date_of_birth",
            "phone",
        )

    async def test_a_purpose_without_a_code_is_refused_before_any_request(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """With purpose_codes, another purpose is PullNotPermittedError and nothing is sent."""
        adapter = bureau(client, purpose_codes={"account_review": "07"})
        with pytest.raises(PullNotPermittedError) as caught:
            await adapter.pull(request())
        assert caught.value.reason == "purpose_not_supported"
        assert not router.calls

    async def test_a_missing_applicant_field_is_refused_before_any_request(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A template needing the address of an applicant without one is an InvalidInputError."""
        template = {"city": "$address.city", "line": "$address.line1"}
        router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        adapter = bureau(client, template=template)
        with pytest.raises(InvalidInputError) as caught:
            await adapter.pull(request())
        assert caught.value.field == "address"
        housed = attrs_evolve(
            cn_applicant(),
            address=Address(lines=("1 Main St",), city="Beijing", country="CN"),
        )
        await adapter.pull(request(housed))
        assert json.loads(pull.calls.last.request.content) == {
            "city": "Beijing",
            "line": "1 Main St",
        }

    @pytest.mark.parametrize(
        ("status", "error"),
        [
            (503, ProviderUnavailableError),
            (429, ProviderRateLimitedError),
            (422, ProviderRejectedError),
            (403, ProviderAuthError),
        ],
    )
    async def test_error_statuses(
        self,
        router: respx.Router,
        client: httpx.AsyncClient,
        status: int,
        error: type[Exception],
    ) -> None:
        """Statuses map to the provider error taxonomy (Retry-After kept on a 429)."""
        router.post(TOKEN_URL).mock(return_value=granted())
        router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(status, headers={"Retry-After": "2"})
        )
        with pytest.raises(error) as caught:
            await bureau(client).pull(request())
        if isinstance(caught.value, ProviderRateLimitedError):
            assert caught.value.retry_after == 2.0

    async def test_transport_error(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """A connection error is a retryable ProviderUnavailableError."""
        router.post(TOKEN_URL).mock(return_value=granted())
        router.post(BASE + CN_PATH).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(ProviderUnavailableError):
            await bureau(client).pull(request())

    @pytest.mark.parametrize(
        "answer",
        [
            httpx.Response(200, text="<html>gateway</html>"),
            httpx.Response(200, json=[1, 2]),
        ],
    )
    async def test_a_body_that_is_not_a_json_object(
        self, router: respx.Router, client: httpx.AsyncClient, answer: httpx.Response
    ) -> None:
        """Not JSON, or JSON that is not an object: ProviderResponseError on ``body``."""
        router.post(TOKEN_URL).mock(return_value=granted())
        router.post(BASE + CN_PATH).mock(return_value=answer)
        with pytest.raises(ProviderResponseError) as caught:
            await bureau(client).pull(request())
        assert caught.value.field == "body"

    async def test_without_a_token(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """``token=None`` sends no Authorization and never asks a token endpoint."""
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        await bureau(client, token=None, idempotency_header=None).pull(request())
        sent = pull.calls.last.request
        assert "authorization" not in sent.headers
        assert "idempotency-key" not in sent.headers

    async def test_owns_only_the_client_it_made(
        self, client: httpx.AsyncClient
    ) -> None:
        """A provider closes a client it made and leaves an injected one open."""
        injected = bureau(client)
        await injected.aclose()
        assert not client.is_closed
        own = HttpBureau("cn-credit-gateway", base_url=BASE, token=None)
        await own.aclose()
        assert own._client.is_closed
        assert "cn-credit-gateway" in repr(own)


def attrs_evolve(applicant: Applicant, **changes: Any) -> Applicant:
    import attrs

    return attrs.evolve(applicant, **changes)


class TestPresets:
    def test_cn_fixture(self) -> None:
        """The CN fixture reads as a clean hit: three elements and the birth date matched."""
        report = read(sample())
        assert report.file is FileStatus.HIT
        assert report.identity.matched == (
            "name",
            "national_id",
            "date_of_birth",
            "phone",
        )
        assert (report.score, report.score_model) == (712, "GW-CREDIT-2")
        assert report.reason_codes == ("R04", "R11", "R17")
        assert [(i.days, i.count) for i in report.inquiries] == [
            (7, 0),
            (30, 1),
            (90, 2),
        ]
        assert report.normalised_score == pytest.approx(412 / 650)
        assert not report.fraud_alerts
        assert not report.security_freeze

    def test_us_fixture(self) -> None:
        """The US fixture: FICO 9 at 742, factor codes, inquiries counted by date, a 30-day late."""
        report = read(sample("us-credit-profile"), preset="us-credit-profile")
        assert report.report_id.startswith("rrt-")
        assert report.file is FileStatus.HIT
        assert report.identity.mismatched == ()
        assert len(report.identity.matched) == 4
        assert (report.score, report.score_model) == (742, "FICO Score 9")
        assert report.reason_codes == ("14", "10", "05", "18")
        # 10062025 is 120 days before the pull, 04112025 is 298 days before.
        assert report.inquiries_within(90) == 0
        assert report.inquiries_within(180) == 1
        assert report.inquiries_within(365) == 2
        assert report.delinquencies.days_30 == 1
        assert report.delinquencies.at_least(60) == 0
        assert report.blacklist_hits == ()

    @pytest.mark.parametrize(
        ("sub_code", "name", "national_id", "phone"),
        [
            ("202", "match", "no_match", "partial"),
            ("203", "no_match", "match", "partial"),
            ("201", "no_match", "no_match", "no_match"),
        ],
    )
    def test_cn_three_element_codes(
        self, sub_code: str, name: str, national_id: str, phone: str
    ) -> None:
        """Mobile3Meta sub-codes say which element failed."""
        body = sample()
        body["data"]["identity"]["subCode"] = sub_code
        identity = read(body).identity
        assert (identity.name, identity.national_id, identity.phone) == (
            MatchResult(name),
            MatchResult(national_id),
            MatchResult(phone),
        )

    def test_us_on_file_values_compared(self) -> None:
        """Another SSN and birth date on file: those elements do not match."""
        body = sample("us-credit-profile")
        body["creditProfile"][0]["ssn"][0]["number"] = "666123450"
        body["creditProfile"][0]["consumerIdentity"]["dob"]["dob"] = "01161980"
        identity = read(body, preset="us-credit-profile").identity
        assert identity.mismatched == ("national_id", "date_of_birth")
        assert identity.matched == ("name", "phone")

    def test_us_alerts_freeze_blacklist_no_hit(self) -> None:
        """Alert statement codes, the freeze message and an OFAC hit are read; no consumerIdentity is a no hit."""
        body = sample("us-credit-profile")
        profile = body["creditProfile"][0]
        profile["statement"] = [{"type": "26"}, {"type": "99"}]
        profile["informationalMessage"] = [{"messageNumber": "57"}]
        profile["ofac"] = {"messageNumber": "01"}
        report = read(body, preset="us-credit-profile")
        assert report.fraud_alerts == ("extended_fraud_alert",)
        assert report.security_freeze
        assert report.blacklist_hits == ("ofac_sdn",)
        empty = {"requestId": "rrt-1", "creditProfile": [{"informationalMessage": []}]}
        assert read(empty, preset="us-credit-profile").file is FileStatus.NO_HIT

    def test_thin_file_needs_no_score(self) -> None:
        """Fewer accounts than ``thin_file_below`` is a thin file, which may lack a score."""
        body = sample("us-credit-profile")
        body["creditProfile"][0]["tradeline"] = body["creditProfile"][0]["tradeline"][
            :2
        ]
        body["creditProfile"][0]["riskModel"] = []
        report = read(body, preset="us-credit-profile")
        assert report.file is FileStatus.THIN_FILE
        assert report.score is None

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            (lambda d: d["data"].pop("reportNo"), "data.reportNo"),
            (lambda d: d["data"].pop("recordStatus"), "data.recordStatus"),
            (lambda d: d["data"]["score"].pop("value"), "data.score.value"),
            (lambda d: d["data"].pop("identity"), "identity"),
            (lambda d: d["data"]["inquiries"].pop("m1"), "data.inquiries.m1"),
            (lambda d: d["data"].update(recordStatus="MAYBE"), "data.recordStatus"),
            (
                lambda d: d["data"]["identity"].update(subCode="999"),
                "data.identity.subCode",
            ),
            (lambda d: d["data"]["score"].update(value="high"), "data.score.value"),
            (lambda d: d["data"]["score"].update(value=True), "data.score.value"),
            (lambda d: d["data"].update(frozen="no"), "data.frozen"),
            (lambda d: d["data"]["overdue"].update(m1=-1), "data.overdue.m1"),
            (lambda d: d["data"].update(reportNo={"id": 1}), "data.reportNo"),
            (lambda d: d["data"].update(reportNo="  "), "data.reportNo"),
            (
                lambda d: d["data"]["score"].update(reasons=[{"c": 1}]),
                "data.score.reasons[*]",
            ),
        ],
    )
    def test_partial_or_malformed_answers(self, change: Any, field: str) -> None:
        """A missing required field, a wrong type or an unknown code: ProviderResponseError naming it."""
        body = copy.deepcopy(sample())
        change(body)
        with pytest.raises(ProviderResponseError) as caught:
            read(body)
        assert caught.value.field == field

    def test_a_no_hit_may_be_sparse(self) -> None:
        """A no hit needs only its report id and status."""
        report = read({"data": {"reportNo": "R1", "recordStatus": "NOT_FOUND"}})
        assert report.file is FileStatus.NO_HIT
        assert report.identity.checked == ()

    def test_bad_inquiry_date(self) -> None:
        """An inquiry date not in the preset's format is a ProviderResponseError."""
        body = sample("us-credit-profile")
        body["creditProfile"][0]["inquiry"] = [{"date": "2025-10-06"}]
        with pytest.raises(ProviderResponseError, match="a date as %m%d%Y"):
            read(body, preset="us-credit-profile")

    def test_report_round_trip_and_repr(self) -> None:
        """A report survives to_data/from_data; its repr shows no score, codes or full id."""
        report = read(sample("us-credit-profile"), preset="us-credit-profile")
        assert BureauReport.from_data(report.to_data()) == report
        text = repr(report)
        assert "742" not in text
        assert report.report_id not in text
        assert "FICO" not in text
        with pytest.raises(ProviderResponseError):
            BureauReport.from_data({"provider": "b"})

    def test_unknown_preset(self) -> None:
        """An unknown preset name is a ConfigurationError listing the known ones."""
        with pytest.raises(ConfigurationError, match="cn-credit-gateway"):
            bureau_preset("nope")
        assert set(BUREAU_PRESETS) == {"us-credit-profile", "cn-credit-gateway"}


class TestMappingConfiguration:
    @pytest.mark.parametrize(
        "build",
        [
            lambda: BureauMapping(report_id="a..b"),
            lambda: BureauMapping(report_id="a[x]"),
            lambda: BureauMapping(
                report_id="id", identity={"email": MatchRule(path="e", compare="$name")}
            ),
            lambda: BureauMapping(report_id="id", delinquencies={"days_15": "x"}),
            lambda: BureauMapping(report_id="id", required={"tradelines"}),
            lambda: BureauMapping(report_id="id", score_range=(850, 300)),
            lambda: MatchRule(path="x"),
            lambda: MatchRule(
                path="x", codes={"1": MatchResult.MATCH}, compare="$name"
            ),
            lambda: MatchRule(path="x", compare="$email"),
            lambda: MatchRule(path="x", compare="name"),
            lambda: MatchRule(path="x", compare="$name:%Y"),
        ],
    )
    def test_mistakes_are_configuration_errors(self, build: Any) -> None:
        """Malformed paths, unknown names and contradictory rules fail at construction."""
        with pytest.raises(ConfigurationError):
            build()

    def test_template_mistakes(self, client: httpx.AsyncClient) -> None:
        """A template naming an unknown field, or holding a non-JSON value, fails at construction."""
        with pytest.raises(ConfigurationError, match="unknown field"):
            bureau(client, template={"a": ["$nickname"]})
        with pytest.raises(ConfigurationError, match="not JSON"):
            bureau(client, template={"a": object()})

    async def test_literals_and_escapes(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """Literal strings, numbers, booleans and nulls pass through; ``$$`` escapes a leading dollar."""
        router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        template = {
            "a": "$$5",
            "b": "plain",
            "c": [1, True, None],
            "d": "$date_of_birth",
        }
        await bureau(client, template=template).pull(request())
        assert json.loads(pull.calls.last.request.content) == {
            "a": "$5",
            "b": "plain",
            "c": [1, True, None],
            "d": "1990-03-07",
        }
        assert "national_id" in template_fields()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3)
    ),
    max_leaves=12,
)


class TestReadPath:
    @given(
        body=JSON,
        path=st.sampled_from(["a", "a.b", "a[0]", "a[*].b", "b[1].c[*]", "c[*][*]"]),
    )
    def test_never_raises_on_any_json(self, body: Any, path: str) -> None:
        """Any JSON and any valid path give a list of non-null values, never an error."""
        values = read_path(body, path)
        assert isinstance(values, list)
        assert None not in values

    @given(items=st.lists(st.integers(), max_size=6))
    def test_wildcard_takes_every_item(self, items: list[int]) -> None:
        """``[*]`` yields each item in order; ``[n]`` the n-th."""
        body = {"a": [{"b": item} for item in items]}
        assert read_path(body, "a[*].b") == items
        assert read_path(body, "a[0].b") == items[:1]

    @given(body=JSON)
    def test_any_answer_reads_or_fails_typed(self, body: Any) -> None:
        """Whatever a bureau sends, the mapping gives a report or a ProviderResponseError."""
        wrapped = {"data": body}
        with contextlib.suppress(ProviderResponseError):
            read(wrapped)

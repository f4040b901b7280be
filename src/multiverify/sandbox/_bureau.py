"""A sandbox credit bureau: the adapter's wire format in memory, answering as a bureau persona's file reads.

[`SandboxBureau`][multiverify.sandbox.SandboxBureau] is an httpx transport
with an OAuth2 token endpoint (client credentials, HTTP Basic) and the
report endpoint of one [`BureauPreset`][multiverify.providers.BureauPreset].
It answers with the preset's sandbox fixture, its identity fields taken
from the request (so a clean file matches whoever applies) and changed as
the persona's file reads, so the real [`HttpBureau`][multiverify.providers.HttpBureau]
and [`CreditBureauChannel`][multiverify.channels.CreditBureauChannel] run
against it unchanged.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import parse_qs

import httpx

from .._clock import Clock, SystemClock
from ..channels import CreditBureauChannel
from ..exceptions import ConfigurationError
from ..providers import BureauPreset, HttpBureau, OAuth2Token, bureau_preset

if TYPE_CHECKING:
    from ._personas import Persona

__all__ = [
    "BUREAU_PERSONAS",
    "SandboxBureau",
    "SandboxCreditBureauChannel",
    "sandbox_bureau_channel",
]

_BASE_URL = "https://bureau.sandbox.multiverify.invalid"
_TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a path, not a secret
_NAMESPACE = uuid.UUID("5d1e3f7a-0c2b-4e8d-9a6f-3b7c1d2e4f60")
_SECRET = b"sandbox-bureau-report-key-0123456789"

BUREAU_PERSONAS = (
    "clean",
    "fraud-alert",
    "thin-file",
    "many-inquiries",
    "identity-mismatch",
)
"""How the applicant's file reads at the sandbox bureau."""


def _other(digits: str) -> str:
    """The same number with its last digit changed: someone else's."""
    return digits[:-1] + ("0" if digits[-1:] != "0" else "1")


# -- the US layout (Experian Credit Profile) -----------------------------------------


def _us(
    answer: dict[str, Any], body: Mapping[str, Any], persona: str, clock: Clock
) -> None:
    profile = answer["creditProfile"][0]
    who = body.get("consumerPii", {}).get("primaryApplicant", {})
    ssn = str(who.get("ssn", {}).get("ssn", ""))
    dob = str(who.get("dob", {}).get("dob", ""))
    phones = [str(p.get("number", "")) for p in who.get("phone", [])]
    surname = str(who.get("name", {}).get("lastName", ""))
    if persona == "identity-mismatch":
        ssn, dob = _other(ssn), _other(dob)
    profile["ssn"] = [{"number": ssn, "variationIndicator": ""}]
    identity = profile["consumerIdentity"]
    identity["name"][0]["surname"] = surname.upper()
    identity["dob"] = {"dob": dob}
    identity["phone"] = [{"number": number, "type": "R"} for number in phones]
    if persona == "fraud-alert":
        profile["statement"].append(
            {
                "type": "25",
                "dateReported": clock.now().strftime("%m%d%Y"),
                "statementText": "INITIAL SECURITY ALERT: CONTACT CONSUMER BEFORE "
                "EXTENDING CREDIT",
            }
        )
    elif persona == "thin-file":
        profile["tradeline"] = profile["tradeline"][:1]
        profile["riskModel"] = []
    elif persona == "many-inquiries":
        profile["inquiry"] = [
            {
                "date": (clock.now() - timedelta(days=days)).strftime("%m%d%Y"),
                "subscriberName": f"SANDBOX LENDER {n}",
                "type": "31",
                "kob": "FP",
            }
            for n, days in enumerate((1, 3, 6, 10, 15, 21, 28), start=1)
        ]


# -- the China layout (credit-data gateway) ------------------------------------------


def _cn(
    answer: dict[str, Any], body: Mapping[str, Any], persona: str, clock: Clock
) -> None:
    del clock
    data = answer["data"]
    answer["requestNo"] = str(body.get("requestNo", ""))
    id_card = str(body.get("idCard", ""))
    # A resident ID number carries the holder's birth date in digits 7-14.
    data["identity"]["birthDate"] = id_card[6:14]
    if persona == "identity-mismatch":
        data["identity"].update(bizCode="2", subCode="202")
    elif persona == "fraud-alert":
        data["alerts"] = [{"type": "fraud_confirmed", "source": "industry-sharing"}]
    elif persona == "thin-file":
        data["recordStatus"] = "THIN"
        del data["score"]
    elif persona == "many-inquiries":
        data["inquiries"] = {"d7": 4, "m1": 9, "m3": 15}


_LAYOUTS: Mapping[
    str, Callable[[dict[str, Any], Mapping[str, Any], str, Clock], None]
] = {"us-credit-profile": _us, "cn-credit-gateway": _cn}


def _answer(status: int, body: Mapping[str, Any]) -> httpx.Response:
    return httpx.Response(status, json=dict(body))


class SandboxCreditBureauChannel(CreditBureauChannel):
    """A [`CreditBureauChannel`][multiverify.channels.CreditBureauChannel] on the sandbox bureau (real channel, sandbox vendor)."""

    sandbox_vendor: ClassVar[bool] = True


class SandboxBureau(httpx.AsyncBaseTransport):
    """A credit bureau in memory: an OAuth2 token endpoint and one preset's report endpoint.

    Args:
        persona: how the file reads, one of [`BUREAU_PERSONAS`][multiverify.sandbox.BUREAU_PERSONAS].
        preset: the wire layout, ``cn-credit-gateway`` or ``us-credit-profile``.
        clock: the clock token expiry and inquiry dates are measured on.
        token_ttl: seconds a token lives.

    Raises:
        ConfigurationError: an unknown persona or preset.
    """

    CLIENT_ID: ClassVar[str] = "sandbox-client"
    CLIENT_SECRET: ClassVar[str] = "sandbox-client-secret"  # noqa: S105 - a sandbox's published secret

    def __init__(
        self,
        *,
        persona: str = "clean",
        preset: str = "cn-credit-gateway",
        clock: Clock | None = None,
        token_ttl: float = 3600.0,
    ) -> None:
        if persona not in BUREAU_PERSONAS:
            raise ConfigurationError(
                message=f"no bureau persona named {persona!r} "
                f"(known: {', '.join(BUREAU_PERSONAS)})"
            )
        self.persona = persona
        self._preset: BureauPreset = bureau_preset(preset)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._token_ttl = token_ttl
        self._tokens: set[str] = set()
        self._client = httpx.AsyncClient(transport=self, base_url=_BASE_URL)
        self.pulls: list[str] = []
        """The idempotency key of every report request answered, in order."""
        self.tokens_issued = 0

    def __repr__(self) -> str:
        return (
            f"<multiverify.sandbox.SandboxBureau({self.persona}, {self._preset.name}, "
            f"pulls={len(self.pulls)})>"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def provider(self, *, name: str = "sandbox-bureau") -> HttpBureau:
        """An [`HttpBureau`][multiverify.providers.HttpBureau] speaking to this bureau."""
        return HttpBureau(
            self._preset,
            name=name,
            base_url=_BASE_URL,
            token=OAuth2Token(
                url=_BASE_URL + _TOKEN_PATH,
                client_id=self.CLIENT_ID,
                client_secret=self.CLIENT_SECRET,
            ),
            client=self._client,
            clock=self._clock,
        )

    def channel(self, **settings: Any) -> SandboxCreditBureauChannel:
        """The real bureau channel on this vendor; ``settings`` go to [`CreditBureauChannel`][multiverify.channels.CreditBureauChannel].

        The secret defaults to a sandbox one and the purpose to ``loan_approval``.
        """
        settings.setdefault("secret", _SECRET)
        settings.setdefault("purpose", "loan_approval")
        return SandboxCreditBureauChannel([self.provider()], **settings)

    def revoke_tokens(self) -> None:
        """Revoke every token issued: the next pull is answered 401 once."""
        self._tokens.clear()

    async def aclose(self) -> None:
        """Close the provider's HTTP client."""
        await self._client.aclose()

    # -- the wire --------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer a token or report request as the bureau would."""
        body = await request.aread()
        path = request.url.path
        if request.method == "POST" and path == _TOKEN_PATH:
            return self._token(request, body)
        if request.method == "POST" and path == self._preset.path:
            return self._report(request, body)
        return _answer(404, {"error": "not_found"})

    def _token(self, request: httpx.Request, body: bytes) -> httpx.Response:
        expected = base64.b64encode(
            f"{self.CLIENT_ID}:{self.CLIENT_SECRET}".encode()
        ).decode()
        form = parse_qs(body.decode())
        if request.headers.get("authorization") != f"Basic {expected}":
            return _answer(401, {"error": "invalid_client"})
        if form.get("grant_type") != ["client_credentials"]:
            return _answer(400, {"error": "unsupported_grant_type"})
        self.tokens_issued += 1
        token = uuid.uuid5(_NAMESPACE, f"token-{self.tokens_issued}").hex
        self._tokens.add(token)
        return _answer(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self._token_ttl,
            },
        )

    def _report(self, request: httpx.Request, body: bytes) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") not in self._tokens:
            return httpx.Response(
                401,
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                json={"error": "invalid_token"},
            )
        try:
            sent = json.loads(body)
        except ValueError:
            return _answer(400, {"error": "invalid_request"})
        if not isinstance(sent, dict):
            return _answer(400, {"error": "invalid_request"})
        key = request.headers.get("idempotency-key", "")
        self.pulls.append(key)
        answer = copy.deepcopy(self._preset.sample())
        _LAYOUTS[self._preset.name](answer, sent, self.persona, self._clock)
        # One report per idempotency key: a retried pull gets the same id.
        report = uuid.uuid5(_NAMESPACE, key or str(len(self.pulls))).hex[:20].upper()
        if self._preset.name == "us-credit-profile":
            answer["requestId"] = f"rrt-{report.lower()}"
        else:
            answer["data"]["reportNo"] = f"CR{report}"
        return _answer(200, answer)


def sandbox_bureau_channel(
    persona: Persona,
    *,
    preset: str = "cn-credit-gateway",
    clock: Clock | None = None,
    **settings: Any,
) -> SandboxCreditBureauChannel:
    """The real bureau channel on the adapter's wire format, against a sandbox bureau reading as ``persona``'s file.

    ``settings`` go to [`CreditBureauChannel`][multiverify.channels.CreditBureauChannel].
    """
    vendor = SandboxBureau(persona=persona.bureau_persona, preset=preset, clock=clock)
    return vendor.channel(**settings)

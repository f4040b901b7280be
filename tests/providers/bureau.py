"""Shared helpers for the bureau provider tests: applicants matching the fixtures, requests, readers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import httpx

from multiverify import Applicant, LoanApplication
from multiverify.providers import (
    BureauReport,
    BureauRequest,
    HttpBureau,
    OAuth2Token,
    bureau_preset,
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

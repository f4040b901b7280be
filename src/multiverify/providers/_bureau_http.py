"""A configurable HTTP JSON bureau: OAuth2, a request template, and a response mapping by field paths.

No bureau publishes an open consumer-credit API with test vectors (the
survey in the research notes: Experian, Equifax and TransUnion need a
contract and granted credentials). What they share is plain HTTP: an
OAuth2 token (RFC 6749 §4.4 client credentials, or §4.3 the resource-owner
password grant Experian's developer platform uses,
https://developer.experian.com/tutorials/oauth-20-tutorial), then a JSON
POST per report with ``Authorization: Bearer`` (RFC 6750 §2.1). So one
adapter serves them all:

- **token**: requested with ``application/x-www-form-urlencoded`` and the
  client authenticated by HTTP Basic (RFC 6749 §2.3.1) or in the body;
  cached until ``expires_in`` (§5.1) minus a skew, and fetched again once
  when a pull answers 401 (RFC 6750 §3.1 ``invalid_token``).
- **request**: a JSON template whose ``"$name"``-style strings are filled
  from the applicant and the pull ([`template_fields`][multiverify.providers.template_fields]).
- **response**: a [`BureauMapping`][multiverify.providers.BureauMapping]
  of field paths (``creditProfile[0].riskModel[*].score``) into a
  [`BureauReport`][multiverify.providers.BureauReport].
- **idempotency**: the attempt's key goes out in a header
  (``Idempotency-Key`` by default), so a retried pull is not a second
  inquiry on the applicant's file.

[`BUREAU_PRESETS`][multiverify.providers.BUREAU_PRESETS] ship two layouts,
each with a sandbox fixture in the package; the guide documents their sources.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

import attrs
import httpx

from .._clock import Clock, SystemClock
from .._http import error_for_response, exchange
from ..exceptions import (
    ConfigurationError,
    ProviderAuthError,
    ProviderResponseError,
    PullNotPermittedError,
)
from ._bureau import BureauReport, BureauRequest
from ._bureau_mapping import BureauMapping, check_template, fill_template
from ._bureau_presets import BureauPreset, bureau_preset

__all__ = ["HttpBureau", "OAuth2Token"]

# -- OAuth2 ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True, repr=False)
class OAuth2Token:
    """How the adapter gets its Bearer token (RFC 6749), and how long it trusts one.

    Attributes:
        url: the token endpoint.
        client_id: the client's id.
        client_secret: the client's secret.
        grant: ``client_credentials`` (§4.4) or ``password`` (§4.3, with
            ``username`` and ``password``).
        username: the resource owner's name, for the password grant.
        password: their password.
        scope: the scope to ask for, if any.
        client_auth: ``basic`` (HTTP Basic, §2.3.1) or ``body`` (the
            client's id and secret as form fields).
        skew: seconds before ``expires_in`` at which a token counts as expired.
        default_ttl: how long a token without ``expires_in`` is used.

    Raises:
        ConfigurationError: the password grant without a username and
            password, or an unknown grant.
    """

    url: str
    client_id: str
    client_secret: str
    grant: Literal["client_credentials", "password"] = "client_credentials"
    username: str | None = None
    password: str | None = None
    scope: str | None = None
    client_auth: Literal["basic", "body"] = "basic"
    skew: float = 60.0
    default_ttl: float = 300.0

    def __attrs_post_init__(self) -> None:
        if self.grant not in ("client_credentials", "password"):
            raise ConfigurationError(message=f"unknown OAuth2 grant {self.grant!r}")
        if self.grant == "password" and (not self.username or not self.password):
            raise ConfigurationError(
                message="the OAuth2 password grant needs a username and password"
            )
        if self.client_auth not in ("basic", "body"):
            raise ConfigurationError(
                message=f"unknown OAuth2 client_auth {self.client_auth!r}"
            )

    def __repr__(self) -> str:
        return f"<OAuth2Token({self.grant}, {self.url}, client_id={self.client_id})>"

    def request(self) -> httpx.Request:
        """The token request."""
        form: dict[str, str] = {"grant_type": self.grant}
        if self.grant == "password":
            form["username"] = str(self.username)
            form["password"] = str(self.password)
        if self.scope:
            form["scope"] = self.scope
        auth: dict[str, str] = {}
        if self.client_auth == "body":
            form["client_id"] = self.client_id
            form["client_secret"] = self.client_secret
        else:
            pair = f"{quote(self.client_id)}:{quote(self.client_secret)}"
            auth["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return httpx.Request(
            "POST",
            self.url,
            data=form,
            headers={"Accept": "application/json", **auth},
        )


# -- the adapter -------------------------------------------------------------------------


class HttpBureau:
    """A [`BureauProvider`][multiverify.providers.BureauProvider] for any JSON bureau over HTTP.

    Args:
        preset: the layout, a [`BureauPreset`][multiverify.providers.BureauPreset]
            or the name of a shipped one.
        base_url: the bureau's API root.
        token: how to get the Bearer token; ``None`` sends none (a gateway
            that authenticates by mTLS or a static header).
        name: the provider's name, as policies list it.
        template: the request body, in place of the preset's.
        mapping: the response mapping, in place of the preset's.
        headers: static headers sent with every pull (Experian's
            ``companyId``, a subscriber code).
        idempotency_header: the header carrying the attempt's key; ``None``
            sends none.
        purpose_codes: our permissible purposes and the bureau's codes for
            them; when given, another purpose is refused before any request.
        client: an httpx client (left open); one is made (and closed) otherwise.
        clock: the clock token expiry is measured on.
        timeout: seconds per request, for a client this provider makes.

    Raises:
        ConfigurationError: an unknown preset, or a template naming an
            unknown field.
    """

    def __init__(
        self,
        preset: BureauPreset | str,
        *,
        base_url: str,
        token: OAuth2Token | None,
        name: str | None = None,
        template: Mapping[str, Any] | None = None,
        mapping: BureauMapping | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_header: str | None = "Idempotency-Key",
        purpose_codes: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._preset = bureau_preset(preset) if isinstance(preset, str) else preset
        self._name = name or self._preset.name
        self._base_url = base_url.rstrip("/")
        self._token_config = token
        self._template = dict(
            template if template is not None else self._preset.template
        )
        check_template(self._template, "template")
        self._mapping = mapping or self._preset.mapping
        self._headers = dict(headers or {})
        self._idempotency_header = idempotency_header
        self._purpose_codes = dict(purpose_codes or {})
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._token: tuple[str, datetime] | None = None
        self._lock = asyncio.Lock()
        self.token_requests = 0
        """How many tokens were fetched (a cached token is reused)."""

    def __repr__(self) -> str:
        return f"<multiverify.providers.HttpBureau({self._name}, {self._preset.name})>"

    @property
    def name(self) -> str:
        """The provider's name."""
        return self._name

    @property
    def preset(self) -> str:
        """The preset's name."""
        return self._preset.name

    async def pull(self, request: BureauRequest, /) -> BureauReport:
        """Fetch a token if needed, POST the filled template, read the answer.

        Raises:
            PullNotPermittedError: ``purpose_codes`` lacks the purpose.
            InvalidInputError: the template needs a field the applicant lacks.
            ProviderAuthError: the token was refused, or a fresh one was too.
            ProviderResponseError: a malformed token or report.
            ProviderError: for other statuses and transport errors.
        """
        if self._purpose_codes and request.purpose not in self._purpose_codes:
            raise PullNotPermittedError(
                message=f"{self._name} has no purpose code for {request.purpose!r}",
                reason="purpose_not_supported",
                purpose=request.purpose,
                provider=self._name,
            )
        code = self._purpose_codes.get(request.purpose, request.purpose)
        body = fill_template(
            self._template, request.applicant, attrs.evolve(request, purpose=code)
        )
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        response = await self._send(request, content, fresh=False)
        if response.status_code == httpx.codes.UNAUTHORIZED and self._token_config:
            # RFC 6750 §3.1: an expired or revoked token; fetch one more, once.
            response = await self._send(request, content, fresh=True)
        if not response.is_success:
            raise error_for_response(self._name, response)
        try:
            answer = response.json()
        except (ValueError, RecursionError):
            raise ProviderResponseError(
                message=f"{self._name} answered with a body that is not JSON",
                provider=self._name,
                field="body",
            ) from None
        if not isinstance(answer, Mapping):
            raise ProviderResponseError(
                message=f"{self._name} answered with JSON that is not an object",
                provider=self._name,
                field="body",
            )
        return self._mapping.read(
            answer,
            provider=self._name,
            preset=self._preset.name,
            request=request,
            pulled_at=self._clock.now(),
        )

    async def aclose(self) -> None:
        """Close the HTTP client this provider made."""
        if self._own_client:
            await self._client.aclose()

    async def _send(
        self, request: BureauRequest, content: bytes, *, fresh: bool
    ) -> httpx.Response:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **self._headers,
        }
        if self._token_config is not None:
            headers["Authorization"] = f"Bearer {await self._bearer(fresh=fresh)}"
        if self._idempotency_header:
            headers[self._idempotency_header] = request.reference
        return await exchange(
            self._client,
            self._name,
            httpx.Request(
                "POST",
                self._base_url + self._preset.path,
                content=content,
                headers=headers,
            ),
        )

    async def _bearer(self, *, fresh: bool) -> str:
        async with self._lock:
            now = self._clock.now()
            if self._token is not None and not fresh and now < self._token[1]:
                return self._token[0]
            self._token = await self._fetch_token(now)
            return self._token[0]

    async def _fetch_token(self, now: datetime) -> tuple[str, datetime]:
        config = self._token_config
        assert config is not None  # noqa: S101 - only called with a token config
        self.token_requests += 1
        response = await exchange(self._client, self._name, config.request())
        if not response.is_success:
            error = error_for_response(
                self._name,
                response,
                message=f"{self._name}'s token endpoint "
                f"answered HTTP {response.status_code}",
            )
            if response.status_code == httpx.codes.BAD_REQUEST:
                # RFC 6749 §5.2: invalid_client / invalid_grant come back as 400.
                raise ProviderAuthError(
                    message=str(error), provider=self._name, status_code=400
                )
            raise error
        try:
            data = response.json()
        except (ValueError, RecursionError):
            data = None
        token = data.get("access_token") if isinstance(data, Mapping) else None
        if not isinstance(token, str) or not token:
            raise ProviderResponseError(
                message=f"{self._name}'s token endpoint sent no access_token",
                provider=self._name,
                field="access_token",
            )
        expires = data.get("expires_in") if isinstance(data, Mapping) else None
        if isinstance(expires, str) and expires.isdigit():
            expires = int(expires)
        ttl = (
            float(expires)
            if isinstance(expires, int | float) and not isinstance(expires, bool)
            else config.default_ttl
        )
        return token, now + timedelta(seconds=max(ttl - config.skew, 0.0))

"""Twilio REST credentials and the one place Twilio's answers become ours.

Twilio's REST APIs (``https://api.twilio.com`` for Calls and Messages,
``https://verify.twilio.com`` for Verify; ``servers`` in the official
``twilio/twilio-oai`` specs) take HTTP Basic auth with ``AccountSid:AuthToken``
or ``ApiKeySid:ApiKeySecret`` and form-encoded bodies. Errors are JSON
``{"code", "message", "more_info", "status"}``. Some 429s are limits of the
verification's lifecycle, not throttling, and must not be retried
(https://www.twilio.com/docs/verify/return-and-error-codes): 60202 (max
check attempts), 60203 (max send attempts), 60207 (service rate limits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from .._http import error_for_response, exchange
from ..exceptions import (
    ConfigurationError,
    ProviderError,
    ProviderRejectedError,
    ProviderUnavailableError,
)

__all__ = ["TwilioAccount"]

# Lifecycle limits that answer 429 but will not pass by waiting a moment.
_NOT_THROTTLING = frozenset({"60202", "60203", "60207"})

Form = Mapping[str, str | Sequence[str]]
"""Form fields; a sequence value repeats the field (``StatusCallbackEvent``)."""


class TwilioAccount:
    """A Twilio account's credentials, shared by the Voice, Messaging and Verify providers.

    Args:
        account_sid: the account (``AC...``); it also names the account in URLs.
        auth_token: the account's auth token; or give ``api_key_sid`` and
            ``api_key_secret`` instead (the auth token still signs callbacks).
        client: an HTTP client to use (left open); one is made and closed otherwise.
        api_base: the REST API's base URL.
        verify_base: the Verify API's base URL.
        provider: the name errors carry.

    Raises:
        ConfigurationError: neither an auth token nor an API key was given.
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str | None = None,
        api_key_sid: str | None = None,
        api_key_secret: str | None = None,
        client: httpx.AsyncClient | None = None,
        api_base: str = "https://api.twilio.com",
        verify_base: str = "https://verify.twilio.com",
        provider: str = "twilio",
    ) -> None:
        if api_key_sid is not None and api_key_secret is not None:
            auth = (api_key_sid, api_key_secret)
        elif auth_token is not None:
            auth = (account_sid, auth_token)
        else:
            raise ConfigurationError(
                message="TwilioAccount needs auth_token, or api_key_sid and api_key_secret"
            )
        self.account_sid = account_sid
        self.api_base = api_base.rstrip("/")
        self.verify_base = verify_base.rstrip("/")
        self.provider = provider
        self._auth = httpx.BasicAuth(*auth)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=10.0)

    def __repr__(self) -> str:
        return f"<multiverify.providers.TwilioAccount({self.account_sid[:6]}...)>"

    async def request(
        self,
        method: str,
        url: str,
        *,
        form: Form | None = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the JSON answer.

        Raises:
            ProviderError: mapped from the status and Twilio's error ``code``;
                a transport failure or a body that is not a JSON object is
                [`ProviderUnavailableError`][multiverify.exceptions.ProviderUnavailableError].
        """
        request = self._client.build_request(
            method,
            url,
            data=dict(form) if form is not None else None,
            params=dict(params) if params is not None else None,
            headers={"Accept": "application/json"},
        )
        request = next(self._auth.auth_flow(request))
        response = await exchange(self._client, self.provider, request)
        try:
            data = response.json()
        except (ValueError, RecursionError):
            data = None
        if not response.is_success:
            raise _error(self.provider, response, data)
        if not isinstance(data, dict):
            raise ProviderUnavailableError(
                message=f"{self.provider} answered with a body that is not a JSON object",
                provider=self.provider,
                status_code=response.status_code,
            )
        return data

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owns_client:
            await self._client.aclose()


def _error(provider: str, response: httpx.Response, data: Any) -> ProviderError:
    code = message = None
    if isinstance(data, dict):
        code = str(data["code"]) if data.get("code") is not None else None
        if isinstance(data.get("message"), str):
            message = (
                f"{provider} answered HTTP {response.status_code}: {data['message']}"
            )
            if code is not None:
                message += f" (error {code})"
    error = error_for_response(provider, response, message=message, code=code)
    if code in _NOT_THROTTLING:
        return ProviderRejectedError(
            message=error.message,
            provider=provider,
            status_code=error.status_code,
            request_id=error.request_id,
            code=code,
        )
    return error

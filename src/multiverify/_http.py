"""The one place where httpx errors and statuses become ours, and retry settings become tenacity.

Providers call [`send`][multiverify._http.send] (or map errors themselves with
[`error_for_response`][multiverify._http.error_for_response]); the runtime
retries provider calls with [`retrying`][multiverify._http.retrying]. No
httpx or tenacity exception leaves the SDK.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import tenacity

from .exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)
from .policy import RetrySettings

__all__ = ["error_for_response", "exchange", "retry_after", "retrying", "send"]

_REQUEST_ID_HEADERS = (
    "x-request-id",
    "request-id",
    "x-twilio-request-id",
    "x-amzn-requestid",
)


def retry_after(
    response: httpx.Response, *, now: datetime | None = None
) -> float | None:
    """Seconds the vendor asks us to wait, from ``Retry-After`` (seconds or HTTP date).

    An HTTP date is counted from the response's own ``Date`` header when it
    has one (the vendor's clock, so a skewed local clock does not stretch or
    cut the wait), else from ``now``, else from the system clock.
    """
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan" and "inf" parse as floats but are no hint at all.
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    when = _http_date(value)
    if when is None:
        return None
    reference = _http_date(response.headers.get("date", "")) or now or datetime.now(UTC)
    return max((when - reference).total_seconds(), 0.0)


def _http_date(value: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def error_for_response(
    provider: str,
    response: httpx.Response,
    *,
    message: str | None = None,
    code: str | None = None,
) -> ProviderError:
    """Map an unsuccessful response to the SDK's provider error taxonomy.

    429 is rate limited (retryable, with Retry-After), 401/403 auth (never
    retried), 408/409/425 and 5xx unavailable (retryable), other 4xx rejected.
    A 5xx or 408 is ``uncertain``: the vendor may have acted on the request.
    ``message`` and ``code`` are the vendor's own words, when it gave them.
    """
    status = response.status_code
    request_id = next(
        (response.headers[h] for h in _REQUEST_ID_HEADERS if h in response.headers),
        None,
    )
    text = message or f"{provider} answered HTTP {status}"
    if status == httpx.codes.TOO_MANY_REQUESTS:
        return ProviderRateLimitedError(
            message=text,
            provider=provider,
            status_code=status,
            request_id=request_id,
            code=code,
            retry_after=retry_after(response),
        )
    kind: type[ProviderError] = ProviderRejectedError
    if status in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
        kind = ProviderAuthError
    elif status >= httpx.codes.INTERNAL_SERVER_ERROR or status in (408, 409, 425):
        kind = ProviderUnavailableError
    return kind(
        message=text,
        provider=provider,
        status_code=status,
        request_id=request_id,
        code=code,
        # A 5xx or a server-side timeout may come after the vendor acted
        # (https://www.twilio.com/docs/errors/20500): the effect is unknown.
        uncertain=status >= httpx.codes.INTERNAL_SERVER_ERROR
        or status == httpx.codes.REQUEST_TIMEOUT,
    )


async def exchange(
    client: httpx.AsyncClient, provider: str, request: httpx.Request
) -> httpx.Response:
    """Send a request and return the response, whatever its status, body read.

    For vendors whose error bodies say more than the status; others use
    [`send`][multiverify._http.send].

    Raises:
        ProviderUnavailableError: transport failure or timeout; ``uncertain``
            unless the connection was never made.
    """
    try:
        response = await client.send(request)
    except httpx.TimeoutException as exc:
        raise ProviderUnavailableError(
            message=f"{provider} timed out: {type(exc).__name__}",
            provider=provider,
            # Until connected, nothing was sent; a read or write timeout may
            # come after the vendor acted on the request.
            uncertain=not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout),
        ) from exc
    except httpx.HTTPError as exc:
        raise ProviderUnavailableError(
            message=f"{provider} could not be reached: {type(exc).__name__}",
            provider=provider,
            uncertain=not isinstance(exc, httpx.ConnectError),
        ) from exc
    await response.aread()
    return response


async def send(
    client: httpx.AsyncClient, provider: str, request: httpx.Request
) -> httpx.Response:
    """Send a request; return a 2xx response or raise a ProviderError.

    Raises:
        ProviderUnavailableError: transport failure or timeout.
        ProviderError: the subclass for the response's status.
    """
    response = await exchange(client, provider, request)
    if response.is_success:
        return response
    raise error_for_response(provider, response)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def retrying(
    settings: RetrySettings,
    *,
    sleep: Callable[[float], Awaitable[None]],
    rng: random.Random | None = None,
) -> tenacity.AsyncRetrying:
    """Tenacity settings for a step's [`RetrySettings`][multiverify.RetrySettings].

    Only retryable [`ProviderError`][multiverify.exceptions.ProviderError]s are
    retried. Backoff is exponential from ``wait_initial`` up to ``wait_max``
    plus up to ``wait_jitter``. A vendor's ``retry_after`` is honoured as
    given: never retried sooner, and when it asks for longer than
    ``wait_max`` the retries stop, so the next provider is tried instead of
    waiting. The total budget ``timeout`` counts the time slept, jitter
    included, so it works on an injected clock. When retries run out, the
    last error is re-raised.
    """
    jitter = rng or random.Random()

    def base(state: tenacity.RetryCallState) -> tuple[float, bool]:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderRateLimitedError) and exc.retry_after is not None:
            return exc.retry_after, False
        backoff = settings.wait_initial * 2 ** (state.attempt_number - 1)
        return min(backoff, settings.wait_max), True

    def wait(state: tenacity.RetryCallState) -> float:
        delay, jittered = base(state)
        if jittered and settings.wait_jitter:
            delay += jitter.uniform(0, settings.wait_jitter)
        return delay

    def stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= settings.attempts:
            return True
        if state.upcoming_sleep > settings.wait_max + settings.wait_jitter:
            return True  # the vendor asks for a longer pause than the step allows
        if settings.timeout is None:
            return False
        # tenacity computes the wait before asking stop: the jittered delay
        # about to be slept counts against the budget as well.
        return state.idle_for + state.upcoming_sleep > settings.timeout

    return tenacity.AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(_is_retryable),
        sleep=sleep,
        reraise=True,
    )

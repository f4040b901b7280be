"""Tests for the HTTP seam: status and transport errors mapped, retries with tenacity.

HTTP goes through ``httpx.MockTransport(router.async_handler)`` with a respx
router that must see every route called; retries sleep through a recording fake.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx

from multiverify import RetrySettings
from multiverify._http import error_for_response, retry_after, retrying, send
from multiverify.exceptions import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
)

BASE = "https://bureau.example.test"
URL = f"{BASE}/v1/reports"
T0 = datetime(2025, 3, 7, 9, 0, tzinfo=UTC)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """A router that fails the test when a route goes unused or a request is unmatched."""
    router = respx.MockRouter(assert_all_called=True, assert_all_mocked=True)
    yield router
    router.assert_all_called()


@pytest.fixture
async def client(router: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose transport is the router."""
    transport = httpx.MockTransport(router.async_handler)
    async with httpx.AsyncClient(transport=transport) as client:
        yield client


def request() -> httpx.Request:
    return httpx.Request("POST", URL, json={"applicant": "app-1"})


async def failure(client: httpx.AsyncClient) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await send(client, "experian", request())
    return info.value


class TestSend:
    @pytest.mark.parametrize("status", [200, 201, 204])
    async def test_success_returns_the_response(
        self, router: respx.MockRouter, client: httpx.AsyncClient, status: int
    ) -> None:
        """A 2xx answer is returned as it is."""
        route = router.post(URL).mock(return_value=httpx.Response(status, text="ok"))
        response = await send(client, "experian", request())
        assert response.status_code == status
        assert route.call_count == 1

    @pytest.mark.parametrize(
        ("status", "kind", "retryable"),
        [
            (400, ProviderRejectedError, False),
            (401, ProviderAuthError, False),
            (403, ProviderAuthError, False),
            (404, ProviderRejectedError, False),
            (408, ProviderUnavailableError, True),
            (409, ProviderUnavailableError, True),
            (422, ProviderRejectedError, False),
            (425, ProviderUnavailableError, True),
            (429, ProviderRateLimitedError, True),
            (500, ProviderUnavailableError, True),
            (502, ProviderUnavailableError, True),
            (503, ProviderUnavailableError, True),
        ],
    )
    async def test_status_is_mapped(
        self,
        router: respx.MockRouter,
        client: httpx.AsyncClient,
        status: int,
        kind: type[ProviderError],
        retryable: bool,
    ) -> None:
        """Each unsuccessful status becomes its ProviderError subclass."""
        router.post(URL).mock(
            return_value=httpx.Response(
                status, json={"error": "x"}, headers={"x-request-id": "req-42"}
            )
        )
        error = await failure(client)
        assert type(error) is kind
        assert error.retryable is retryable
        assert (error.provider, error.status_code, error.request_id) == (
            "experian",
            status,
            "req-42",
        )
        assert str(error) == f"experian answered HTTP {status}"

    @pytest.mark.parametrize(
        "header",
        ["x-request-id", "request-id", "x-twilio-request-id", "x-amzn-requestid"],
    )
    async def test_request_id_headers(
        self, router: respx.MockRouter, client: httpx.AsyncClient, header: str
    ) -> None:
        """The vendor's request id is read from any of the usual headers."""
        router.post(URL).mock(return_value=httpx.Response(500, headers={header: "rid"}))
        assert (await failure(client)).request_id == "rid"

    async def test_no_request_id(
        self, router: respx.MockRouter, client: httpx.AsyncClient
    ) -> None:
        """Without a request-id header the error has none."""
        router.post(URL).mock(return_value=httpx.Response(404))
        assert (await failure(client)).request_id is None

    async def test_retry_after_seconds(
        self, router: respx.MockRouter, client: httpx.AsyncClient
    ) -> None:
        """429 carries the vendor's Retry-After in seconds."""
        router.post(URL).mock(
            return_value=httpx.Response(429, headers={"Retry-After": "7"})
        )
        error = await failure(client)
        assert isinstance(error, ProviderRateLimitedError)
        assert error.retry_after == 7.0

    async def test_retry_after_http_date_in_the_past(
        self, router: respx.MockRouter, client: httpx.AsyncClient
    ) -> None:
        """An HTTP date already passed means retry at once."""
        router.post(URL).mock(
            return_value=httpx.Response(
                429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
            )
        )
        error = await failure(client)
        assert isinstance(error, ProviderRateLimitedError)
        assert error.retry_after == 0.0

    @pytest.mark.parametrize("headers", [{}, {"Retry-After": "soon"}])
    async def test_retry_after_missing_or_unreadable(
        self,
        router: respx.MockRouter,
        client: httpx.AsyncClient,
        headers: dict[str, str],
    ) -> None:
        """Without a usable Retry-After the hint is None."""
        router.post(URL).mock(return_value=httpx.Response(429, headers=headers))
        error = await failure(client)
        assert isinstance(error, ProviderRateLimitedError)
        assert error.retry_after is None

    async def test_connect_error(
        self, router: respx.MockRouter, client: httpx.AsyncClient
    ) -> None:
        """A transport error is a retryable ProviderUnavailableError."""
        router.post(URL).mock(side_effect=httpx.ConnectError("refused"))
        error = await failure(client)
        assert type(error) is ProviderUnavailableError
        assert error.retryable
        assert (error.status_code, error.request_id) == (None, None)
        assert str(error) == "experian could not be reached: ConnectError"
        assert isinstance(error.__cause__, httpx.ConnectError)

    async def test_read_timeout(
        self, router: respx.MockRouter, client: httpx.AsyncClient
    ) -> None:
        """A timeout is a retryable ProviderUnavailableError."""
        router.post(URL).mock(side_effect=httpx.ReadTimeout("slow"))
        error = await failure(client)
        assert type(error) is ProviderUnavailableError
        assert error.retryable
        assert str(error) == "experian timed out: ReadTimeout"
        assert isinstance(error.__cause__, httpx.ReadTimeout)

    @pytest.mark.parametrize(
        ("failure_", "uncertain"),
        [
            (httpx.ConnectError("refused"), False),
            (httpx.ConnectTimeout("slow"), False),
            (httpx.PoolTimeout("busy"), False),
            (httpx.ReadTimeout("slow"), True),
            (httpx.WriteTimeout("slow"), True),
            (httpx.RemoteProtocolError("closed"), True),
            (httpx.ReadError("reset"), True),
        ],
    )
    async def test_transport_errors_say_whether_the_request_may_have_acted(
        self,
        router: respx.MockRouter,
        client: httpx.AsyncClient,
        failure_: Exception,
        uncertain: bool,
    ) -> None:
        """Only a failure after the connection was made leaves the outcome uncertain."""
        router.post(URL).mock(side_effect=failure_)
        assert (await failure(client)).uncertain is uncertain

    @pytest.mark.parametrize(
        ("status", "uncertain"),
        [
            (500, True),
            (503, True),
            (408, True),
            (409, False),
            (429, False),
            (400, False),
        ],
    )
    async def test_statuses_say_whether_the_request_may_have_acted(
        self,
        router: respx.MockRouter,
        client: httpx.AsyncClient,
        status: int,
        uncertain: bool,
    ) -> None:
        """A 5xx or 408 may come after the vendor acted; other statuses did not act."""
        router.post(URL).mock(return_value=httpx.Response(status))
        assert (await failure(client)).uncertain is uncertain


class TestErrorForResponse:
    def test_custom_message(self) -> None:
        """A provider may word the error itself."""
        error = error_for_response(
            "twilio", httpx.Response(400), message="twilio: invalid number"
        )
        assert type(error) is ProviderRejectedError
        assert str(error) == "twilio: invalid number"


class TestRetryAfter:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            ("120", 120.0),
            (" 3 ", 3.0),
            ("1.5", 1.5),
            ("-5", 0.0),
            ("0", 0.0),
            ("Fri, 07 Mar 2025 09:01:00 GMT", 60.0),
            ("Fri, 07 Mar 2025 09:01:00 -0000", 60.0),
            ("Fri, 07 Mar 2025 17:00:30 +0800", 30.0),
            ("Fri, 07 Mar 2025 08:00:00 GMT", 0.0),
            ("soon", None),
            ("", None),
            ("nan", None),
            ("inf", None),
        ],
    )
    def test_header_values(self, value: str, seconds: float | None) -> None:
        """Seconds and HTTP dates are read; past dates and negatives give zero."""
        response = httpx.Response(429, headers={"Retry-After": value})
        assert retry_after(response, now=T0) == seconds

    def test_no_header(self) -> None:
        """Without the header there is no hint."""
        assert retry_after(httpx.Response(429), now=T0) is None

    @pytest.mark.parametrize(
        ("date", "seconds"),
        [
            ("Fri, 07 Mar 2025 09:00:30 GMT", 30.0),  # the vendor's clock
            ("Fri, 07 Mar 2025 09:02:00 GMT", 0.0),
            ("not a date", 60.0),  # unreadable: counted from now
        ],
    )
    def test_an_http_date_counts_from_the_responses_date(
        self, date: str, seconds: float
    ) -> None:
        """A Retry-After date is counted from the vendor's ``Date``, not a skewed local clock."""
        response = httpx.Response(
            429, headers={"Retry-After": "Fri, 07 Mar 2025 09:01:00 GMT", "Date": date}
        )
        assert retry_after(response, now=T0) == seconds


class Sleeps:
    """A fake sleep that records the delays it was asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class Flaky:
    """A call that raises the given errors in turn, then returns ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def unavailable(n: int = 0) -> ProviderUnavailableError:
    return ProviderUnavailableError(message=f"down {n}", provider="experian")


def limited(after: float | None) -> ProviderRateLimitedError:
    return ProviderRateLimitedError(
        message="slow down", provider="experian", status_code=429, retry_after=after
    )


async def attempt(
    settings: RetrySettings,
    call: Flaky,
    sleep: Sleeps,
    rng: random.Random | None = None,
) -> str:
    async for try_ in retrying(settings, sleep=sleep, rng=rng):
        with try_:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover


class TestRetrying:
    async def test_retries_until_success(self) -> None:
        """Retryable errors are retried with exponential backoff until one succeeds."""
        call, sleep = Flaky(unavailable(), unavailable()), Sleeps()
        settings = RetrySettings(attempts=3, wait_initial=0.1, wait_max=5)
        assert await attempt(settings, call, sleep) == "ok"
        assert call.calls == 3
        assert sleep.delays == [0.1, 0.2]

    async def test_first_try_success_does_not_sleep(self) -> None:
        """A call that works at once never sleeps."""
        call, sleep = Flaky(), Sleeps()
        assert await attempt(RetrySettings(), call, sleep) == "ok"
        assert (call.calls, sleep.delays) == (1, [])

    @pytest.mark.parametrize(
        "error",
        [
            ProviderAuthError(message="no", provider="experian", status_code=401),
            ProviderRejectedError(message="bad", provider="experian", status_code=422),
            ProviderUnavailableError(message="x", provider="experian", retryable=False),
            ValueError("a bug, not a vendor"),
        ],
    )
    async def test_only_retryable_errors_are_retried(self, error: Exception) -> None:
        """Errors not marked retryable are raised at once."""
        call, sleep = Flaky(error), Sleeps()
        with pytest.raises(type(error)) as info:
            await attempt(RetrySettings(attempts=5), call, sleep)
        assert info.value is error
        assert (call.calls, sleep.delays) == (1, [])

    async def test_attempts_are_respected_and_the_last_error_raised(self) -> None:
        """After ``attempts`` tries the last error itself is re-raised."""
        errors = [unavailable(n) for n in range(5)]
        call, sleep = Flaky(*errors), Sleeps()
        settings = RetrySettings(attempts=4, wait_initial=0.1, wait_max=5)
        with pytest.raises(ProviderUnavailableError) as info:
            await attempt(settings, call, sleep)
        assert info.value is errors[3]
        assert call.calls == 4
        assert sleep.delays == [0.1, 0.2, 0.4]

    async def test_single_attempt_never_retries(self) -> None:
        """``attempts=1`` means one try and no sleep."""
        call, sleep = Flaky(unavailable()), Sleeps()
        with pytest.raises(ProviderUnavailableError):
            await attempt(RetrySettings(attempts=1), call, sleep)
        assert (call.calls, sleep.delays) == (1, [])

    async def test_backoff_is_capped_at_wait_max(self) -> None:
        """Exponential backoff stops growing at ``wait_max``."""
        call, sleep = Flaky(*[unavailable()] * 5), Sleeps()
        settings = RetrySettings(attempts=6, wait_initial=1, wait_max=5)
        assert await attempt(settings, call, sleep) == "ok"
        assert sleep.delays == [1, 2, 4, 5, 5]

    async def test_retry_after_replaces_the_backoff(self) -> None:
        """A vendor's Retry-After is slept instead of the backoff, without jitter."""
        call, sleep = Flaky(limited(2.5), limited(None), limited(0)), Sleeps()
        settings = RetrySettings(attempts=4, wait_initial=0.5, wait_max=5)
        assert await attempt(settings, call, sleep) == "ok"
        assert sleep.delays == [2.5, 1.0, 0]

    async def test_retry_after_longer_than_wait_max_gives_up(self) -> None:
        """A Retry-After beyond ``wait_max`` is never cut short: retries stop instead."""
        call, sleep = Flaky(limited(3600)), Sleeps()
        settings = RetrySettings(attempts=3, wait_initial=0.5, wait_max=5)
        with pytest.raises(ProviderRateLimitedError):
            await attempt(settings, call, sleep)
        assert call.calls == 1
        assert sleep.delays == []

    async def test_retry_after_within_wait_max_is_honoured_exactly(self) -> None:
        """A Retry-After within ``wait_max`` replaces the backoff as given."""
        call, sleep = Flaky(limited(4)), Sleeps()
        settings = RetrySettings(attempts=2, wait_initial=0.5, wait_max=5)
        assert await attempt(settings, call, sleep) == "ok"
        assert sleep.delays == [4]

    async def test_jitter(self) -> None:
        """Up to ``wait_jitter`` random seconds are added, drawn from ``rng``."""
        call, sleep = Flaky(unavailable(), unavailable(), limited(3)), Sleeps()
        settings = RetrySettings(
            attempts=4, wait_initial=1, wait_max=10, wait_jitter=0.5
        )
        assert await attempt(settings, call, sleep, random.Random(0)) == "ok"
        expected = random.Random(0)
        first, second = expected.uniform(0, 0.5), expected.uniform(0, 0.5)
        assert sleep.delays == [1 + first, 2 + second, 3]

    async def test_default_rng(self) -> None:
        """Without an ``rng`` the jitter stays within its bounds."""
        call, sleep = Flaky(unavailable()), Sleeps()
        settings = RetrySettings(attempts=2, wait_initial=1, wait_jitter=0.5)
        assert await attempt(settings, call, sleep) == "ok"
        assert 1 <= sleep.delays[0] <= 1.5

    async def test_timeout_budget_stops_retries(self) -> None:
        """Retries stop when the next sleep would exceed ``timeout`` of slept time."""
        errors = [unavailable(n) for n in range(10)]
        call, sleep = Flaky(*errors), Sleeps()
        settings = RetrySettings(attempts=10, timeout=5, wait_initial=1, wait_max=10)
        with pytest.raises(ProviderUnavailableError) as info:
            await attempt(settings, call, sleep)
        # 1 + 2 = 3 fits; 3 + 4 = 7 would not.
        assert sleep.delays == [1, 2]
        assert call.calls == 3
        assert info.value is errors[2]

    async def test_timeout_budget_may_be_used_up_exactly(self) -> None:
        """A sleep that ends exactly at the budget is still allowed."""
        call, sleep = Flaky(*[unavailable()] * 3), Sleeps()
        settings = RetrySettings(attempts=10, timeout=3, wait_initial=1, wait_max=10)
        with pytest.raises(ProviderUnavailableError):
            await attempt(settings, call, sleep)
        assert sleep.delays == [1, 2]

    async def test_timeout_budget_counts_retry_after(self) -> None:
        """A Retry-After that would overrun the budget stops at once."""
        call, sleep = Flaky(limited(4)), Sleeps()
        settings = RetrySettings(attempts=5, timeout=3, wait_max=10)
        with pytest.raises(ProviderRateLimitedError):
            await attempt(settings, call, sleep)
        assert sleep.delays == []

    async def test_timeout_budget_counts_jitter(self) -> None:
        """The jitter about to be slept counts against the budget too."""
        call, sleep = Flaky(*[unavailable()] * 3), Sleeps()
        settings = RetrySettings(
            attempts=10, timeout=3.5, wait_initial=1, wait_max=10, wait_jitter=0.5
        )
        with pytest.raises(ProviderUnavailableError):
            await attempt(settings, call, sleep, random.Random(0))
        expected = random.Random(0)
        first, second = expected.uniform(0, 0.5), expected.uniform(0, 0.5)
        # 1 + first + 2 fits in 3.5, but not with the second jitter added.
        assert 1 + first + 2 <= 3.5 < 1 + first + 2 + second
        assert sleep.delays == [1 + first]
        assert sum(sleep.delays) <= 3.5

    async def test_timeout_of_timedelta(self) -> None:
        """The budget may be given as a timedelta."""
        call, sleep = Flaky(*[unavailable()] * 3), Sleeps()
        settings = RetrySettings(
            attempts=10, timeout=timedelta(seconds=1), wait_initial=1, wait_max=10
        )
        with pytest.raises(ProviderUnavailableError):
            await attempt(settings, call, sleep)
        assert sleep.delays == [1]

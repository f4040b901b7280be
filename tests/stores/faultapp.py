"""The app the fault tests run in worker processes: an HTTP pull step, then an SMS code.

``multiverify worker --app faultapp:build`` builds its Verifier here. The
environment configures it:

- ``FAULT_VENDOR``: the loopback fake vendor (Twilio's Messages API and a
  pull endpoint that bills each idempotency key once, see ``fakevendor``);
- ``FAULT_SESSIONS``: ``first-last``, the sessions this replica starts at boot
  (those that exist already are left alone);
- ``FAULT_KILL`` and ``FAULT_KILL_AT``: the process SIGKILLs itself the
  ``FAULT_KILL_AT``-th time it reaches the point ``FAULT_KILL`` names:
  ``after_save`` (a transition with a step start is saved, the start not
  yet carried out), ``during_effect`` (the vendor did the work, its answer
  is lost), ``after_effect`` (the work is done and recorded by the channel,
  its result not yet saved in the session).
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import date
from typing import Any

import attrs
import httpx

from multiverify import (
    Applicant,
    ChannelResult,
    ChannelSpec,
    LoanApplication,
    Policy,
    ResultStatus,
    Rule,
    Signal,
    Step,
    Verifier,
)
from multiverify.channels import Finished, SmsCodeChannel, StepContext
from multiverify.exceptions import ProviderUnavailableError
from multiverify.providers import TwilioAccount, TwilioMessaging
from multiverify.stores import SessionStore

SECRET = "fault-test-secret-0123456789"
ACCOUNT = "ACfault"

PULL_SPEC = ChannelSpec(name="http_pull", automatic=True, signals={"report_found"})

POLICY = Policy(
    name="faults",
    version="1",
    steps=[
        Step(id="pull", channel="http_pull"),
        # Long enough for a start resumed after its replica was killed (the
        # 3 s lease, then a worker that may be slow on a loaded machine) to
        # send its SMS before the step times out.
        Step(id="sms", channel="sms_code", after=["pull"], timeout=20),
    ],
    channels={"http_pull": PULL_SPEC},
    rules=[
        Rule(
            outcome="approved",
            when="steps.pull.status == 'passed' && steps.sms.status == 'passed'",
            reason="all.confirmed",
        ),
        Rule(
            outcome="rejected",
            when="steps.sms.status == 'timeout'",
            reason="sms.timeout",
        ),
    ],
)


def phone(index: int) -> str:
    """The applicant's phone number of session ``index`` (a mainland mobile)."""
    return f"+86138{index:08d}"


def session_id(index: int) -> str:
    """The id of session ``index``."""
    return f"s{index:03d}"


def applicant(index: int) -> Applicant:
    """The applicant of session ``index``."""
    return Applicant(
        applicant_id=f"a{index}",
        name="Li Lei",
        national_id="110101199001011234",
        phone=phone(index),
        date_of_birth=date(1990, 1, 1),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="5000", currency="CNY", term_months=12, purpose="phone"
        ),
    )


class _Killer:
    """SIGKILLs this process the n-th time the configured point is reached."""

    def __init__(self) -> None:
        self.point = os.environ.get("FAULT_KILL", "")
        self.at = int(os.environ.get("FAULT_KILL_AT", "0"))
        self.count = 0

    def reached(self, point: str) -> None:
        if point != self.point:
            return
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


KILLER = _Killer()


class _KillingTransport(httpx.AsyncBaseTransport):
    """Passes requests on; dies after a vendor's answer to a POST arrived."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method == "POST":
            await response.aread()
            KILLER.reached("during_effect")
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _KillingStore:
    """The store, with a kill point after saving a transition that starts a step."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def create(self, session: Any, **kwargs: Any) -> int:
        return self._saved(await self._store.create(session, **kwargs), kwargs)

    async def save(self, session: Any, **kwargs: Any) -> int:
        return self._saved(await self._store.save(session, **kwargs), kwargs)

    def _saved(self, version: int, kwargs: dict[str, Any]) -> int:
        if any(type(e).__name__ == "StartStep" for e in kwargs.get("effects", ())):
            KILLER.reached("after_save")
        return version


@attrs.frozen
class PullState:
    """What the pull channel keeps: the vendor's report id."""

    report_id: str


class HttpPull:
    """An automatic channel that pulls a report over HTTP, keyed by the step's idempotency key."""

    def __init__(self, base: str, client: httpx.AsyncClient) -> None:
        self._url = f"{base}/pull"
        self._client = client

    @property
    def spec(self) -> ChannelSpec:
        return PULL_SPEC

    @property
    def state_type(self) -> type[PullState]:
        return PullState

    async def start(self, context: StepContext, /) -> Finished:
        try:
            response = await self._client.post(
                self._url,
                headers={"Idempotency-Key": context.idempotency_key},
                json={"session_id": context.session_id},
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailableError(
                message=str(exc), provider="pull", retryable=True
            ) from exc
        report = response.json()
        KILLER.reached("after_effect")
        return Finished(
            result=ChannelResult(
                status=ResultStatus.PASSED, signals=[Signal(name="report_found")]
            ),
            state=PullState(report_id=report["report_id"]),
        )

    async def handle(self, context: StepContext, state: Any, message: Any, /) -> Any:
        raise NotImplementedError

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        return None


async def _sent(_: Any) -> None:
    KILLER.reached("after_effect")


def channels(base: str, client: httpx.AsyncClient) -> list[Any]:
    """The app's channels on the fake vendor at ``base``."""
    account = TwilioAccount(
        account_sid=ACCOUNT, auth_token="token", client=client, api_base=base
    )
    sms = SmsCodeChannel(
        [TwilioMessaging(account, from_="+15005550006")],
        secret=SECRET,
        brand="Acme",
        on_send=[_sent],
        in_flight=4.0,
    )
    return [HttpPull(base, client), sms]


async def _start_all(verifier: Verifier, first: int, last: int) -> None:
    existing = set(await verifier.store.session_ids())
    for index in range(first, last + 1):
        if session_id(index) in existing:
            continue
        await verifier.start(applicant(index), session_id=session_id(index))


async def build(store: SessionStore) -> Verifier:
    """The worker's Verifier; starts this replica's sessions in the background."""
    client = httpx.AsyncClient(transport=_KillingTransport(), timeout=10)
    verifier = Verifier(
        POLICY,
        channels=channels(os.environ["FAULT_VENDOR"], client),
        store=_KillingStore(store),  # type: ignore[arg-type]
        lease=3.0,
        watch_poll=0.2,
    )
    sessions = os.environ.get("FAULT_SESSIONS")
    if sessions:
        first, _, last = sessions.partition("-")
        task = asyncio.ensure_future(_start_all(verifier, int(first), int(last)))
        _TASKS.add(task)
    return verifier


_TASKS: set[asyncio.Task[None]] = set()

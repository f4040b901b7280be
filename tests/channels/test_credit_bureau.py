"""Tests for the credit-bureau channel, run by the Verifier on a FakeClock with fake and respx'd bureaus."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from multiverify import (
    Applicant,
    Consent,
    Fallback,
    LoanApplication,
    Outcome,
    Policy,
    ResultStatus,
    RetrySettings,
    Rule,
    Session,
    Step,
    Verifier,
)
from multiverify.channels import (
    CreditBureauChannel,
    StepContext,
    Submission,
    bureau_result,
)
from multiverify.exceptions import (
    ConfigurationError,
    InvalidInputError,
    PolicyError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderUnavailableError,
    PullNotPermittedError,
    StoreUnavailableError,
)
from multiverify.providers import (
    BureauReport,
    BureauRequest,
    Delinquencies,
    FileStatus,
    HttpBureau,
    IdentityMatch,
    InquiryCount,
    MatchResult,
    OAuth2Token,
    bureau_preset,
)
from multiverify.stores import MemoryStore, SessionStore, SqliteStore
from multiverify.testing import FakeBureauProvider, FakeClock, Scripted, ScriptedChannel
from stores.interleaved import Interleaved

T0 = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
SECRET = b"0123456789abcdef0123456789abcdef"
BASE = "https://bureau.example"
TOKEN_URL = BASE + "/oauth2/token"


def consent(**changes: Any) -> Consent:
    """The applicant's consent to a pull for loan approval."""
    fields: dict[str, Any] = {"reference": "consent-42", "purposes": ("loan_approval",)}
    fields.update(changes)
    return Consent(**fields)


def applicant(
    consents: Sequence[Consent] | None = None, applicant_id: str = "a-42"
) -> Applicant:
    """Wang Fang, borrowing 8,000 CNY, with her consent on record."""
    return Applicant(
        applicant_id=applicant_id,
        name="王芳",
        national_id="110101199003072420",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        locale="zh-CN",
        loan=LoanApplication(
            amount="8000", currency="CNY", term_months=12, purpose="laptop"
        ),
        consents=[consent()] if consents is None else consents,
    )


def policy(
    providers: Sequence[str] = (),
    *,
    options: Mapping[str, Any] | None = None,
    retry: RetrySettings | None = None,
    fallback: bool = False,
) -> Policy:
    """A bureau step (with an SMS step as its fallback when asked)."""
    steps = [
        Step(
            id="bureau",
            channel="credit_bureau",
            providers=tuple(providers),
            options=dict(options or {}),
            retry=retry or RetrySettings(attempts=1),
            fallback=Fallback(step="sms", on=["error"]) if fallback else None,
        )
    ]
    if fallback:
        steps.append(Step(id="sms", channel="sms_code"))
    return Policy(
        name="bureau",
        version="1",
        steps=steps,
        rules=[
            Rule(
                outcome="rejected",
                when="'fraud_alert' in steps.bureau.signals",
                reason="bureau.fraud_alert",
            ),
            Rule(
                outcome="approved",
                when="steps.bureau.status == 'passed'",
                reason="bureau.passed",
            ),
        ],
        default="review",
    )


def channel(*providers: Any, **settings: Any) -> CreditBureauChannel:
    settings.setdefault("secret", SECRET)
    settings.setdefault("purpose", "loan_approval")
    return CreditBureauChannel(providers or [FakeBureauProvider()], **settings)


def report(**changes: Any) -> BureauReport:
    """A clean hit, changed as asked."""
    fields: dict[str, Any] = {
        "provider": "fake-bureau",
        "preset": "fake",
        "report_id": "r-1",
        "file": FileStatus.HIT,
        "identity": IdentityMatch(
            name="match", national_id="match", date_of_birth="match", phone="match"
        ),
        "score": 700,
        "score_range": (300, 900),
    }
    fields.update(changes)
    return BureauReport(**fields)


async def run(
    bureau: CreditBureauChannel,
    who: Applicant | None = None,
    *,
    store: SessionStore | None = None,
    clock: FakeClock | None = None,
    extra: Sequence[Any] = (),
    **policy_settings: Any,
) -> Session:
    """Run one session to its verdict and return it."""
    async with Verifier(
        policy(**policy_settings),
        channels=[bureau, *extra],
        store=store or MemoryStore(),
        clock=clock or FakeClock(T0),
    ) as verifier:
        session = await verifier.start(who or applicant())
        await verifier.wait(session.session_id)
        return await verifier.get(session.session_id)


class SlowBureau:
    """A fake bureau whose pulls wait until ``release`` is set."""

    name = "fake-bureau"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.fake = FakeBureauProvider()

    async def pull(self, request: BureauRequest, /) -> BureauReport:
        await self.release.wait()
        return await self.fake.pull(request)

    async def aclose(self) -> None:
        return None


def lock_key(bureau: CreditBureauChannel, who: Applicant | None = None) -> str:
    """The shared-state key of the pull lock for ``who``'s loan-approval report."""
    context = StepContext(
        session_id="s1",
        step_id="bureau",
        attempt=1,
        provider=None,
        idempotency_key="s1:bureau:1",
        applicant=who or applicant(),
        clock=FakeClock(T0),
    )
    return f"{bureau._report_key(context, 'loan_approval', 'fake-bureau')}:lock"


def bureau_step(session: Session) -> Any:
    return session.step("bureau")


class TestResult:
    async def test_a_clean_file_passes(self) -> None:
        """A clean hit passes with identity_match, a score in [0, 1] and evidence without personal data."""
        fake = FakeBureauProvider()
        session = await run(channel(fake))
        assert session.verdict is not None
        assert session.verdict.outcome is Outcome.APPROVED
        result = bureau_step(session).result
        assert result.status is ResultStatus.PASSED
        assert result.signal_names == ("identity_match",)
        assert result.score == pytest.approx((720 - 300) / 550)
        assert [(e.kind, e.reference) for e in result.evidence] == [
            ("bureau_report", "fake-bureau:fake-bureau-report-1"),
            ("consent", "consent-42"),
        ]
        assert (
            "matched=name,national_id,date_of_birth,phone" in result.evidence[0].detail
        )
        text = repr(result) + json.dumps(dict(result.facts))
        for personal in ("110101199003072420", "王芳", "13800138000", "1990-03-07"):
            assert personal not in text
        (sent,) = fake.requests
        assert sent.reference.endswith(":bureau:1")
        assert (sent.purpose, sent.consent) == ("loan_approval", "consent-42")

    @pytest.mark.parametrize(
        ("changes", "status", "signals"),
        [
            (
                {"fraud_alerts": ["initial_fraud_alert"]},
                ResultStatus.FAILED,
                ["identity_match", "fraud_alert"],
            ),
            (
                {"security_freeze": True},
                ResultStatus.FAILED,
                ["identity_match", "security_freeze"],
            ),
            (
                {"blacklist_hits": ["court_enforcement"]},
                ResultStatus.FAILED,
                ["identity_match", "blacklist_hit"],
            ),
            (
                {
                    "identity": IdentityMatch(
                        name="match", national_id="no_match", phone="partial"
                    )
                },
                ResultStatus.FAILED,
                ["identity_mismatch"],
            ),
            (
                {"file": FileStatus.THIN_FILE, "score": None},
                ResultStatus.INCONCLUSIVE,
                ["identity_match", "thin_file"],
            ),
            (
                {"file": FileStatus.NO_HIT, "identity": IdentityMatch(), "score": None},
                ResultStatus.INCONCLUSIVE,
                ["no_hit"],
            ),
            (
                {
                    "inquiries": [
                        InquiryCount(days=30, count=5),
                        InquiryCount(days=7, count=1),
                    ]
                },
                ResultStatus.PASSED,
                ["identity_match", "many_recent_inquiries"],
            ),
            (
                {"delinquencies": Delinquencies(days_60=1)},
                ResultStatus.PASSED,
                ["identity_match", "delinquent"],
            ),
            (
                {"delinquencies": Delinquencies(days_30=2)},
                ResultStatus.PASSED,
                ["identity_match"],
            ),
        ],
    )
    async def test_signals(
        self, changes: dict[str, Any], status: ResultStatus, signals: list[str]
    ) -> None:
        """Each finding becomes its signal; blocking ones fail the step, thin or no files are inconclusive."""
        fake = FakeBureauProvider()
        fake.respond(report(**changes))
        result = bureau_step(await run(channel(fake))).result
        assert result.status is status
        assert list(result.signal_names) == signals
        assert set(result.signal_names) <= channel().spec.signals

    async def test_limits_and_min_score(self) -> None:
        """inquiry_limits, delinquent_after and the step's min_score tune the signals and status."""
        fake = FakeBureauProvider()
        fake.respond(
            report(
                inquiries=[InquiryCount(days=90, count=3)],
                delinquencies=Delinquencies(days_30=1),
                score=610,
            )
        )
        tuned = channel(fake, inquiry_limits={90: 2}, delinquent_after=30)
        result = bureau_step(await run(tuned, options={"min_score": 620})).result
        assert result.status is ResultStatus.FAILED
        assert result.signal_names == (
            "identity_match",
            "many_recent_inquiries",
            "delinquent",
        )
        assert "score below 620" in result.detail
        assert result.facts["score"] == 610


class TestGuard:
    @pytest.mark.parametrize(
        ("who", "settings", "options", "reason"),
        [
            (applicant(), {"purpose": None}, {}, "no_purpose"),
            (applicant(consents=[]), {}, {}, "no_consent"),
            (
                applicant(
                    consents=[Consent(reference="call-rec", scope="call_recording")]
                ),
                {},
                {},
                "no_consent",
            ),
            (
                applicant(consents=[consent(expires_at=T0 - timedelta(days=1))]),
                {},
                {},
                "consent_expired",
            ),
            (
                applicant(consents=[consent(granted_at=T0 + timedelta(hours=1))]),
                {},
                {},
                "consent_expired",
            ),
            (applicant(), {}, {"purpose": "marketing"}, "purpose_not_consented"),
        ],
    )
    async def test_no_request_leaves_without_purpose_and_consent(
        self,
        who: Applicant,
        settings: dict[str, Any],
        options: dict[str, Any],
        reason: str,
    ) -> None:
        """Without a purpose or a consent covering it, the step errors and respx sees no request at all."""
        router = respx.Router(assert_all_called=False)
        client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
        adapter = HttpBureau(
            "cn-credit-gateway",
            base_url=BASE,
            token=OAuth2Token(url=TOKEN_URL, client_id="c", client_secret="s"),
            client=client,
        )
        bureau = channel(adapter, **settings)
        context = StepContext(
            session_id="s1",
            step_id="bureau",
            attempt=1,
            provider=None,
            idempotency_key="s1:bureau:1",
            applicant=who,
            options=options,
            clock=FakeClock(T0),
            shared=MemoryStore(),
        )
        with pytest.raises(PullNotPermittedError) as caught:
            await bureau.start(context)
        assert caught.value.reason == reason
        session = await run(bureau, who, options=options, fallback=True, extra=[sms()])
        record = bureau_step(session)
        assert record.result.status is ResultStatus.ERROR
        assert "PullNotPermittedError" in record.result.detail
        # The session went on: the fallback step ran and a verdict was reached.
        assert session.step("sms").result.status is ResultStatus.PASSED
        assert session.verdict is not None
        assert not router.calls
        await client.aclose()

    async def test_a_consent_for_any_purpose(self) -> None:
        """A consent listing no purposes covers any; the step's purpose option wins over the channel's."""
        fake = FakeBureauProvider()
        who = applicant(consents=[Consent(reference="c-any")])
        session = await run(channel(fake), who, options={"purpose": "account_review"})
        assert bureau_step(session).result.status is ResultStatus.PASSED
        assert fake.requests[0].purpose == "account_review"
        assert fake.requests[0].consent == "c-any"


def sms() -> ScriptedChannel:
    return ScriptedChannel("sms_code", [Scripted.passes()])


class TestReuse:
    @pytest.mark.parametrize("kind", ["memory", "sqlite"])
    async def test_two_verifiers_sharing_a_store_pull_once(
        self, kind: str, tmp_path: Path
    ) -> None:
        """Two replicas on one store: the second session reuses the first one's report."""
        store: SessionStore = (
            MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "s.db")
        )
        clock = FakeClock(T0)
        who = applicant(consents=[consent(purposes=("loan_approval", "post_loan"))])
        first, second = FakeBureauProvider(), FakeBureauProvider()
        one = await run(channel(first), who, store=store, clock=clock)
        two = await run(channel(second), who, store=store, clock=clock)
        assert (len(first.requests), len(second.requests)) == (1, 0)
        reused = bureau_step(two).result
        assert reused.facts["reused"] is True
        assert "(report reused)" in reused.detail
        assert (
            reused.evidence[0].reference
            == bureau_step(one).result.evidence[0].reference
        )
        # Another purpose is another pull; so is the same one after the TTL.
        await run(
            channel(second),
            who,
            store=store,
            clock=clock,
            options={"purpose": "post_loan"},
        )
        assert len(second.requests) == 1
        await clock.advance(timedelta(days=30).total_seconds())
        await run(channel(second), who, store=store, clock=clock)
        assert len(second.requests) == 2
        await store.aclose()

    async def test_another_phone_is_another_pull(self) -> None:
        """A report whose phone matched one number is never reused for a session with another number."""
        store = MemoryStore()
        clock = FakeClock(T0)
        fake = FakeBureauProvider()
        await run(channel(fake), store=store, clock=clock)
        other = attrs.evolve(applicant(), phone="+8613900139000")
        session = await run(channel(fake), other, store=store, clock=clock)
        assert len(fake.requests) == 2
        assert bureau_step(session).result.facts["reused"] is False

    async def test_another_bureau_is_another_pull(self) -> None:
        """A report from one bureau is never reused as another bureau's."""
        store = MemoryStore()
        clock = FakeClock(T0)
        first, second = FakeBureauProvider("one"), FakeBureauProvider("two")
        await run(channel(first), store=store, clock=clock)
        session = await run(channel(second), store=store, clock=clock)
        assert (len(first.requests), len(second.requests)) == (1, 1)
        assert bureau_step(session).result.provider == "two"

    async def test_the_store_never_holds_the_identity(self) -> None:
        """The cached report's key and value carry no name, ID number or birth date."""
        store = MemoryStore()
        await run(channel(FakeBureauProvider()), store=store)
        dumped = repr(vars(store))
        for personal in ("110101199003072420", "王芳", "1990-03-07", "13800138000"):
            assert personal not in dumped
        assert "credit_bureau:report:" in dumped

    async def test_reuse_off(self) -> None:
        """``reuse_ttl = 0`` (the step's option) pulls every time."""
        fake = FakeBureauProvider()
        store = MemoryStore()
        clock = FakeClock(T0)
        for _ in range(2):
            await run(
                channel(fake), store=store, clock=clock, options={"reuse_ttl": "0s"}
            )
        assert len(fake.requests) == 2

    async def test_a_concurrent_session_waits_for_the_pull(self) -> None:
        """A second session asking while the first pulls waits for that report instead of pulling."""
        slow = SlowBureau()
        fake = slow.fake

        store = MemoryStore()
        clock = FakeClock(T0)
        bureau = channel(slow)
        async with Verifier(policy(), channels=[bureau], store=store, clock=clock) as v:
            one = await v.start(applicant())
            two = await v.start(applicant(applicant_id="a-43"))
            for _ in range(5):
                await asyncio.sleep(0)
            assert clock.sleepers >= 1  # the second waits on the lock
            slow.release.set()
            await v.wait(one.session_id)
            for _ in range(3):
                await clock.advance(0.25)
                await asyncio.sleep(0)
            await v.wait(two.session_id)
            second = bureau_step(await v.get(two.session_id)).result
        assert len(fake.requests) == 1
        assert second.facts["reused"] is True

    async def test_a_pull_slower_than_the_lock_keeps_it(self) -> None:
        """The lock is renewed while a slow pull runs: a session asking later still waits, and one pull is made."""
        slow = SlowBureau()
        fake = slow.fake

        store = MemoryStore()
        clock = FakeClock(T0)
        # The lock lives 4 s; the second session waits up to 4 s per try.
        bureau = channel(slow, wait=4, poll=1)
        async with Verifier(policy(), channels=[bureau], store=store, clock=clock) as v:
            one = await v.start(applicant())
            for _ in range(5):
                await asyncio.sleep(0)
            # Ten times the lock's ttl into the pull, a second session asks.
            for _ in range(40):
                await clock.advance(1)
            two = await v.start(applicant(applicant_id="a-43"))
            for _ in range(5):
                await clock.advance(1)
            assert fake.requests == []  # still in flight, and nobody pulled again
            slow.release.set()
            await v.wait(one.session_id)
            for _ in range(20):
                await clock.advance(1)
                if (await v.get(two.session_id)).finished:
                    break
            second = bureau_step(await v.get(two.session_id)).result
        # One pull: the second session found the lock held all along and,
        # with no retries in this policy, ended in a retryable error.
        assert len(fake.requests) == 1
        assert second.detail == (
            "ProviderUnavailableError: another pull of this report is still in flight"
        )

    async def test_a_renewal_never_takes_back_a_lock_another_replica_took(
        self,
    ) -> None:
        """A lock taken over between the renewal's check and its write stays the new holder's."""
        slow = SlowBureau()
        store = MemoryStore()
        view = Interleaved(store, "put_value", "replace_value")
        clock = FakeClock(T0)
        bureau = channel(slow, wait=3, poll=1)
        lock = lock_key(bureau)
        async with Verifier(policy(), channels=[bureau], store=view, clock=clock) as v:
            one = await v.start(applicant())
            for _ in range(5):
                await asyncio.sleep(0)
            holder = await store.get_value(lock, at=clock.now())
            assert holder is not None

            async def taken_over() -> None:
                # Another replica, whose clock is past the lock's end, takes it.
                later = clock.now() + timedelta(seconds=10)
                assert await store.put_value(
                    lock, "other", at=later, ttl=30, only_if_absent=True
                )

            view.before = taken_over
            await clock.advance(1)  # the renewal, a third of the lock's 3 s
            for _ in range(5):
                await asyncio.sleep(0)
            assert await store.get_value(lock, at=clock.now()) == "other"
            slow.release.set()
            await v.wait(one.session_id)
        assert await store.get_value(lock, at=clock.now()) == "other"

    async def test_a_lock_renewal_that_fails_does_not_stop_the_pull(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A store that fails while the lock is renewed is logged; the pull still finishes."""
        slow = SlowBureau()
        fake = slow.fake

        class Flaky(MemoryStore):
            failing = False

            async def replace_value(
                self,
                key: str,
                value: str,
                /,
                *,
                expected: str,
                at: datetime,
                ttl: float,
            ) -> bool:
                if self.failing and key.endswith(":lock"):
                    raise StoreUnavailableError(message="down", store="memory")
                return await super().replace_value(
                    key, value, expected=expected, at=at, ttl=ttl
                )

        store = Flaky()
        clock = FakeClock(T0)
        bureau = channel(slow, wait=3, poll=1)
        async with Verifier(policy(), channels=[bureau], store=store, clock=clock) as v:
            one = await v.start(applicant())
            for _ in range(5):
                await asyncio.sleep(0)
            store.failing = True
            for _ in range(3):
                await clock.advance(1)
            store.failing = False
            # The lock lapsed meanwhile: it is no longer renewed (not taken back).
            await clock.advance(2)
            assert await store.get_value(lock_key(bureau), at=clock.now()) is None
            slow.release.set()
            await v.wait(one.session_id)
        assert len(fake.requests) == 1
        assert "could not renew a bureau pull lock" in caplog.text

    async def test_a_lock_that_never_clears(self) -> None:
        """A pull lock held past ``wait`` by someone else is a retryable error; the holder's retry proceeds."""
        store = MemoryStore()
        clock = FakeClock(T0)
        bureau = channel(FakeBureauProvider(), wait=0.5, poll=0.25)
        base = StepContext(
            session_id="s1",
            step_id="bureau",
            attempt=1,
            provider=None,
            idempotency_key="s1:bureau:1",
            applicant=applicant(),
            clock=clock,
            shared=store,
        )
        key = bureau._report_key(base, "loan_approval", "fake-bureau")
        await store.put_value(f"{key}:lock", "other:bureau:1", at=T0, ttl=60)

        async def advance() -> None:
            while True:
                await asyncio.sleep(0)
                if clock.sleepers:
                    await clock.advance(0.25)

        ticker = asyncio.ensure_future(advance())
        with pytest.raises(ProviderUnavailableError, match="in flight"):
            await bureau.start(base)
        ticker.cancel()
        mine = attrs.evolve(base, idempotency_key="other:bureau:1")
        outcome = await bureau.start(mine)
        assert outcome.result.status is ResultStatus.PASSED
        assert await store.get_value(f"{key}:lock", at=clock.now()) is None

    async def test_an_unreadable_cached_report_is_pulled_again(self) -> None:
        """Garbage under the report key is ignored: the channel pulls afresh."""
        fake = FakeBureauProvider()
        store = MemoryStore()
        bureau = channel(fake)
        context = StepContext(
            session_id="s1",
            step_id="bureau",
            attempt=1,
            provider=None,
            idempotency_key="s1:bureau:1",
            applicant=applicant(),
            clock=FakeClock(T0),
            shared=store,
        )
        key = bureau._report_key(context, "loan_approval", "fake-bureau")
        await store.put_value(key, '{"provider": "x"}', at=T0, ttl=60)
        outcome = await bureau.start(context)
        assert outcome.result.facts["reused"] is False
        assert len(fake.requests) == 1
        no_store = await bureau.start(attrs.evolve(context, shared=None))
        assert no_store.result.facts["reused"] is False
        assert len(fake.requests) == 2


class TestRetriesAndFailover:
    async def test_a_retried_pull_carries_the_same_idempotency_key(self) -> None:
        """A 503 is retried by the runtime; both requests carry the attempt's key, and one report results."""
        router = respx.Router(assert_all_called=False)
        router.post(TOKEN_URL).mock(
            return_value=httpx.Response(
                200, json={"access_token": "t", "expires_in": 3600}
            )
        )
        pull = router.post(BASE + bureau_preset("cn-credit-gateway").path).mock(
            side_effect=[
                httpx.Response(503),
                httpx.Response(200, json=bureau_preset("cn-credit-gateway").sample()),
            ]
        )
        client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
        clock = FakeClock(T0)
        adapter = HttpBureau(
            "cn-credit-gateway",
            name="gateway",
            base_url=BASE,
            token=OAuth2Token(url=TOKEN_URL, client_id="c", client_secret="s"),
            client=client,
            clock=clock,
        )
        async with Verifier(
            policy(retry=RetrySettings(attempts=3, wait_initial=0.5, wait_jitter=0)),
            channels=[channel(adapter)],
            clock=clock,
        ) as verifier:
            session = await verifier.start(applicant())
            decided = asyncio.ensure_future(verifier.wait(session.session_id))
            for _ in range(100):  # past the retry's pause, whenever it begins
                if decided.done():
                    break
                await clock.advance(0.5)
            await decided
            done = await verifier.get(session.session_id)
        keys = [call.request.headers["idempotency-key"] for call in pull.calls]
        assert keys == [f"{session.session_id}:bureau:1"] * 2
        assert bureau_step(done).result.status is ResultStatus.PASSED
        await client.aclose()

    async def test_fails_over_to_the_next_bureau(self) -> None:
        """A bureau refusing for good hands the step to the next one the policy lists."""
        first, second = FakeBureauProvider("first"), FakeBureauProvider("second")
        first.fail(
            ProviderRejectedError(message="no", provider="first", status_code=422)
        )
        session = await run(channel(first, second), providers=("first", "second"))
        result = bureau_step(session).result
        assert result.provider == "second"
        assert result.status is ResultStatus.PASSED
        assert len(first.requests) == 1
        assert bureau_step(session).attempt == 2

    async def test_a_refused_pull_ends_the_step_at_the_first_bureau(self) -> None:
        """The consent guard's refusal is the same for every bureau: one refusal, no failover, and no request leaves."""
        router = respx.Router(assert_all_called=False)
        client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
        gateways = [
            HttpBureau(
                "cn-credit-gateway",
                name=name,
                base_url=BASE,
                token=OAuth2Token(url=TOKEN_URL, client_id="c", client_secret="s"),
                client=client,
            )
            for name in ("first", "second")
        ]
        store = MemoryStore()
        session = await run(
            channel(*gateways),
            applicant(consents=[]),
            store=store,
            providers=("first", "second"),
            fallback=True,
            extra=[sms()],
        )
        events = await store.audit_events(session.session_id)
        await client.aclose()
        assert not router.calls
        record = bureau_step(session)
        assert (record.attempt, record.state.value) == (1, "done")
        assert record.result.status is ResultStatus.ERROR
        assert record.result.provider == "first"
        assert record.errors == (
            "PullNotPermittedError: applicant a-42 carries no credit_bureau consent record",
        )
        bureau_inputs = [
            e.data for e in events if e.data.get("input", {}).get("step_id") == "bureau"
        ]
        assert [d["input"]["type"] for d in bureau_inputs] == ["StepErrored"]
        [errored] = bureau_inputs
        assert errored["input"]["failover"] is False
        assert [t["error"] for t in errored["call"]["tries"]] == [record.errors[0]]
        started = [
            effect["step_id"]
            for e in events
            for effect in e.data.get("effects", [])
            if effect["type"] == "StartStep"
        ]
        assert started.count("bureau") == 1
        # The policy goes on as for any error: the fallback ran.
        assert session.step("sms").result.status is ResultStatus.PASSED

    async def test_a_bureau_without_a_code_for_the_purpose_fails_over(self) -> None:
        """A refusal of one bureau's own (no purpose code) is no local refusal: the next bureau takes over."""
        router = respx.Router(assert_all_called=False)
        client = httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler))
        first = HttpBureau(
            "cn-credit-gateway",
            name="first",
            base_url=BASE,
            token=OAuth2Token(url=TOKEN_URL, client_id="c", client_secret="s"),
            client=client,
            purpose_codes={"account_review": "07"},
        )
        second = FakeBureauProvider("second")
        session = await run(channel(first, second), providers=("first", "second"))
        await client.aclose()
        assert not router.calls
        record = bureau_step(session)
        assert record.attempt == 2
        assert record.result.status is ResultStatus.PASSED
        assert record.errors[0].startswith(
            "PullNotPermittedError: first has no purpose code"
        )
        assert len(second.requests) == 1

    async def test_a_malformed_answer_ends_the_step_as_error(self) -> None:
        """A ProviderResponseError from the last bureau: the step is ``error``, the fallback runs."""
        fake = FakeBureauProvider()
        fake.fail(
            ProviderResponseError(
                message="no score", provider="fake-bureau", field="score"
            )
        )
        session = await run(channel(fake), fallback=True, extra=[sms()])
        record = bureau_step(session)
        assert record.result.status is ResultStatus.ERROR
        assert "ProviderResponseError" in record.result.detail
        assert session.step("sms").result.status is ResultStatus.PASSED
        assert session.verdict is not None
        assert session.verdict.outcome is Outcome.REVIEW

    async def test_a_provider_the_channel_lacks(self) -> None:
        """A step naming a bureau the channel lacks errors the step."""
        session = await run(channel(), providers=("elsewhere",))
        assert "elsewhere" in bureau_step(session).result.detail


class TestConfiguration:
    @pytest.mark.parametrize(
        "settings",
        [
            {"secret": b"short"},
            {"delinquent_after": 45},
            {"poll": 0},
            {"reuse_ttl": -1},
            {"inquiry_limits": {0: 1}},
        ],
    )
    def test_bad_settings(self, settings: dict[str, Any]) -> None:
        """A short secret or a setting out of range is refused at construction."""
        with pytest.raises(ConfigurationError):
            channel(**settings)

    def test_providers(self) -> None:
        """No providers, or two with one name, are refused; names keep their order."""
        with pytest.raises(ConfigurationError):
            CreditBureauChannel([], secret=SECRET)
        with pytest.raises(ConfigurationError, match="two bureau"):
            channel(FakeBureauProvider("a"), FakeBureauProvider("a"))
        both = channel(FakeBureauProvider("a"), FakeBureauProvider("b"))
        assert both.providers == ("a", "b")
        assert "a, b" in repr(both)
        assert both.state_type is None

    @pytest.mark.parametrize(
        "options",
        [
            {"purpose": ""},
            {"reuse_ttl": "soon"},
            {"reuse_ttl": -5},
            {"min_score": "high"},
            {"purpose_code": "08"},
        ],
    )
    async def test_bad_options(self, options: dict[str, Any]) -> None:
        """Invalid step options are located when the policy is built, and refused by the channel."""
        with pytest.raises(PolicyError) as caught:
            policy(options=options)
        (problem,) = caught.value.problems
        assert problem.path.startswith("steps[0].options.")
        context = StepContext(
            session_id="s1",
            step_id="bureau",
            attempt=1,
            provider=None,
            idempotency_key="s1:bureau:1",
            applicant=applicant(),
            options=options,
            clock=FakeClock(T0),
        )
        with pytest.raises(ConfigurationError, match="credit_bureau step options"):
            await channel().start(context)

    async def test_takes_no_input_and_closes_providers(self) -> None:
        """handle refuses input, cancel does nothing, aclose closes every provider."""
        fake = FakeBureauProvider()
        bureau = channel(fake)
        context = StepContext(
            session_id="s1",
            step_id="bureau",
            attempt=1,
            provider=None,
            idempotency_key="s1:bureau:1",
            applicant=applicant(),
            clock=FakeClock(T0),
        )
        with pytest.raises(InvalidInputError):
            await bureau.handle(context, None, Submission(payload={}))
        await bureau.cancel(context, None)
        await bureau.aclose()
        assert fake.closed


class TestConsent:
    def test_covers(self) -> None:
        """A consent covers its scope and purposes within its validity only."""
        record = consent(granted_at=T0, expires_at=T0 + timedelta(days=90))
        assert record.covers("credit_bureau", "loan_approval", at=T0)
        assert not record.covers("credit_bureau", "marketing", at=T0)
        assert not record.covers("call_recording", "loan_approval", at=T0)
        assert not record.covers(
            "credit_bureau", "loan_approval", at=T0 + timedelta(days=90)
        )
        assert Consent(reference="c", purposes="x").purposes == ("x",)

    def test_invalid(self) -> None:
        """An empty reference or a naive time is an InvalidInputError naming the field."""
        with pytest.raises(InvalidInputError) as caught:
            Consent(reference=" ")
        assert caught.value.field == "consents.reference"
        with pytest.raises(InvalidInputError) as naive:
            Consent(reference="c", expires_at=datetime(2026, 1, 1))  # noqa: DTZ001
        assert naive.value.field == "consents.expires_at"


MATCHES = st.sampled_from(list(MatchResult))


class TestBureauResult:
    @given(
        identity=st.builds(
            IdentityMatch,
            name=MATCHES,
            national_id=MATCHES,
            date_of_birth=MATCHES,
            phone=MATCHES,
        ),
        file=st.sampled_from(list(FileStatus)),
        alerts=st.lists(st.sampled_from(["initial_fraud_alert", "x"]), max_size=2),
        frozen=st.booleans(),
        lists=st.lists(st.sampled_from(["court", "fraud"]), max_size=2),
        score=st.none() | st.integers(min_value=300, max_value=900),
        inquiries=st.dictionaries(
            st.sampled_from([7, 30, 90]), st.integers(0, 12), max_size=3
        ),
    )
    def test_invariants(
        self,
        *,
        identity: IdentityMatch,
        file: FileStatus,
        alerts: list[str],
        frozen: bool,
        lists: list[str],
        score: int | None,
        inquiries: dict[int, int],
    ) -> None:
        """Signals follow the report, blocking findings fail the step, and the score stays in [0, 1]."""
        made = report(
            identity=identity,
            file=file,
            fraud_alerts=alerts,
            security_freeze=frozen,
            blacklist_hits=lists,
            score=score,
            inquiries=[InquiryCount(days=d, count=c) for d, c in inquiries.items()],
        )
        result = bureau_result(made, purpose="p", consent="c")
        names = set(result.signal_names)
        assert names <= channel().spec.signals
        assert ("identity_mismatch" in names) == bool(identity.mismatched)
        assert not {"identity_match", "identity_mismatch"} <= names
        assert ("fraud_alert" in names) == bool(alerts)
        blocking = bool(identity.mismatched or alerts or frozen or lists)
        assert (result.status is ResultStatus.FAILED) == blocking
        if not blocking:
            expected = (
                ResultStatus.PASSED
                if file is FileStatus.HIT
                else ResultStatus.INCONCLUSIVE
            )
            assert result.status is expected
        assert result.score is None or 0.0 <= result.score <= 1.0
        assert (result.score is None) == (score is None)

"""Tests for the SMS one-time-code channel: lifecycle, abuse and cost limits, failover, idempotency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.fake_sms import FakeSms
from multiverify import (
    Applicant,
    LoanApplication,
    Policy,
    ResultStatus,
    RetrySettings,
    Rule,
    Step,
    StepState,
    Verifier,
)
from multiverify.channels import (
    Channel,
    Finished,
    ProviderEvent,
    RateLimit,
    SmsCodeChannel,
    SmsCodeSettings,
    SmsCodeState,
    SmsEncoding,
    SmsLimits,
    SmsSent,
    SmsTemplate,
    StepContext,
    StepOutcome,
    Submission,
    TimerDue,
    Waiting,
    normalize_code,
)
from multiverify.exceptions import (
    ConfigurationError,
    InvalidInputError,
    PhoneNumberRefusedError,
    ProviderNumberRejectedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
    QuotaExceededError,
    SessionFinishedError,
    StepNotWaitingError,
    StoreUnavailableError,
)
from multiverify.providers import (
    AliyunSms,
    CheckOutcome,
    SmsMessage,
    SmsReceipt,
    TwilioAccount,
    TwilioMessaging,
    VerifyCheck,
    VerifyRequest,
    VerifyStarted,
)
from multiverify.stores import MemoryStore
from multiverify.testing import FakeClock
from multiverify.webhooks import (
    TwilioMessageStatus,
    TwilioSignature,
    WebhookRequest,
    twilio_signature,
)
from stores.interleaved import Interleaved
from stores.one_by_one import Atomic, OneByOne

SECRET = "a-server-secret-of-32-bytes-long"
PHONE = "+8613800138000"


class FakeVerify:
    """A recording VerifyProvider that makes and checks its own codes."""

    def __init__(self, name: str = "vendor", *, max_checks: int = 10) -> None:
        self._name = name
        self.codes: dict[str, str] = {}
        self.cancelled: list[str] = []
        self.requests: list[VerifyRequest] = []
        self.checks: dict[str, int] = {}
        self.max_checks = max_checks
        self.expired: set[str] = set()

    @property
    def name(self) -> str:
        return self._name

    async def start(self, request: VerifyRequest, /) -> VerifyStarted:
        self.requests.append(request)
        verification = f"VE{len(self.requests)}"
        self.codes[verification] = "4" * request.code_length
        return VerifyStarted(provider=self._name, verification_id=verification)

    async def check(
        self, verification_id: str, code: str, /, *, to: str
    ) -> VerifyCheck:
        if verification_id in self.cancelled or verification_id in self.expired:
            return VerifyCheck(outcome=CheckOutcome.EXPIRED)
        self.checks[verification_id] = self.checks.get(verification_id, 0) + 1
        if self.checks[verification_id] > self.max_checks:
            return VerifyCheck(outcome=CheckOutcome.EXHAUSTED)
        if self.codes[verification_id] == code:
            return VerifyCheck(outcome=CheckOutcome.APPROVED)
        return VerifyCheck(outcome=CheckOutcome.WRONG)

    async def cancel(self, verification_id: str, /) -> None:
        self.cancelled.append(verification_id)

    async def aclose(self) -> None:
        return None

    @property
    def code(self) -> str:
        return self.codes[f"VE{len(self.requests)}"]


class UncertainFirst(FakeVerify):
    """A vendor whose first start times out after it may have sent the code."""

    failed = False

    async def start(self, request: VerifyRequest, /) -> VerifyStarted:
        if not self.failed:
            self.failed = True
            raise ProviderUnavailableError(
                message="timeout", provider=self.name, uncertain=True
            )
        return await super().start(request)


def applicant(
    phone: str = PHONE,
    *,
    locale: str = "zh-CN",
    applicant_id: str = "app-1",
    client_ip: str | None = "198.51.100.7",
) -> Applicant:
    """An applicant with a loan."""
    return Applicant(
        applicant_id=applicant_id,
        name="Wang Fang",
        national_id="110101199003072420",
        phone=phone,
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        locale=locale,
        client_ip=client_ip,
        loan=LoanApplication(
            amount=Decimal(8000), currency="CNY", term_months=12, purpose="laptop"
        ),
    )


class KeepsValues(MemoryStore):
    """A store whose every value another replica has just changed: a compared delete never matches."""

    async def delete_value(self, key: str, /, *, value: str | None = None) -> bool:
        return False


class NoRefunds(OneByOne):
    """A store without atomic takes that cannot be reached for refunds."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())

    async def refund(self, key: str, /, *, at: datetime, amount: float = 1.0) -> bool:
        raise StoreUnavailableError(message="down", store="memory")


class Harness:
    """One channel driven directly, with a fake clock and a shared store."""

    def __init__(
        self,
        providers: Sequence[Any] | None = None,
        *,
        settings: SmsCodeSettings | None = None,
        limits: SmsLimits | None = None,
        shared: MemoryStore | None = None,
        clock: FakeClock | None = None,
        **kwargs: Any,
    ) -> None:
        self.providers = list(providers) if providers is not None else [FakeSms()]
        self.clock = clock or FakeClock()
        self.shared = shared if shared is not None else MemoryStore()
        self.sent: list[SmsSent] = []

        async def hook(sent: SmsSent) -> None:
            self.sent.append(sent)

        self.channel = SmsCodeChannel(
            self.providers,
            secret=SECRET,
            brand="Acme",
            settings=settings,
            limits=limits,
            on_send=[hook],
            **kwargs,
        )
        self.state: SmsCodeState | None = None

    def context(
        self,
        *,
        session_id: str = "s1",
        attempt: int = 1,
        who: Applicant | None = None,
        options: dict[str, Any] | None = None,
        provider: str | None = None,
    ) -> StepContext:
        return StepContext(
            session_id=session_id,
            step_id="sms",
            attempt=attempt,
            provider=provider,
            idempotency_key=f"{session_id}:sms:{attempt}",
            applicant=who or applicant(),
            options=options or {},
            clock=self.clock,
            shared=self.shared,
        )

    async def start(self, **kwargs: Any) -> StepOutcome:
        outcome = await self.channel.start(self.context(**kwargs))
        self.state = outcome.state
        return outcome

    async def send(self, message: Any, **kwargs: Any) -> StepOutcome:
        outcome = await self.channel.handle(self.context(**kwargs), self.state, message)
        if outcome.state is not None:
            self.state = outcome.state
        return outcome

    async def submit(self, payload: dict[str, Any], **kwargs: Any) -> StepOutcome:
        return await self.send(Submission(payload=payload), **kwargs)

    @property
    def fake(self) -> FakeSms:
        provider = self.providers[0]
        assert isinstance(provider, FakeSms)
        return provider


async def second_send_refused(
    shared: Any, limits: SmsLimits, who: Applicant | None = None
) -> tuple[Harness, QuotaExceededError]:
    """A send, then one to another number (or ``who``) that a limit refuses: the harness and the refusal."""
    harness = Harness(limits=limits, shared=shared)
    await harness.start()
    with pytest.raises(QuotaExceededError) as info:
        await harness.start(session_id="s2", who=who or applicant("+8613900139000"))
    return harness, info.value


def receipt(data: dict[str, Any]) -> ProviderEvent:
    """A delivery receipt for the harness's step."""
    return ProviderEvent(session_id="s1", step_id="sms", kind="sms.status", data=data)


def signals(outcome: StepOutcome) -> tuple[str, ...]:
    """The signal names of a finished outcome."""
    assert isinstance(outcome, Finished)
    return outcome.result.signal_names


class TestLifecycle:
    async def test_start_sends_a_code_and_keeps_only_its_hmac(self) -> None:
        """The code is six digits, sent once; the state holds its HMAC, never the code."""
        harness = Harness()
        outcome = await harness.start()

        assert isinstance(outcome, Waiting)
        (message,) = harness.fake.sent
        assert re.fullmatch(r"\d{6}", message.code)
        assert message.code in message.text
        assert message.reference == "s1:sms:1:1"
        state = outcome.state
        assert isinstance(state, SmsCodeState)
        assert re.fullmatch(r"[0-9a-f]{64}", state.digest)
        assert message.code not in repr(state)
        assert message.code not in str(attrs.asdict(state))
        assert PHONE not in repr(state)
        assert isinstance(harness.channel, Channel)

    async def test_challenge_shows_masked_destination_and_expiry(self) -> None:
        """The challenge masks the number and names the expiry, a durable channel timer."""
        harness = Harness()
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        expiry = harness.clock.now() + timedelta(minutes=5)
        assert outcome.challenge is not None
        assert outcome.challenge.kind == "code"
        assert outcome.challenge.destination == "+86*******8000"
        assert outcome.challenge.expires_at == expiry
        assert outcome.timers == (("code_expiry", expiry),)

    async def test_right_code_passes_once(self) -> None:
        """The right code passes with ``code_verified``; the code is then spent."""
        harness = Harness()
        await harness.start()
        code = harness.fake.code
        outcome = await harness.submit({"code": code})
        assert signals(outcome) == ("code_verified",)
        assert isinstance(outcome, Finished)
        assert outcome.result.status is ResultStatus.PASSED
        assert outcome.result.facts["sends"] == 1
        assert outcome.result.facts["encoding"] == "ucs2"
        again = await harness.submit({"code": code})  # the spent state, handed back
        assert isinstance(again, Waiting)
        assert again.challenge is not None
        assert "expired" in again.challenge.message

    async def test_wrong_codes_count_then_fail(self) -> None:
        """Each wrong code counts; the fifth fails the step with ``attempts_exhausted``."""
        harness = Harness()
        await harness.start()
        wrong = "000000" if harness.fake.code != "000000" else "111111"
        for left in (4, 3, 2, 1):
            outcome = await harness.submit({"code": wrong})
            assert isinstance(outcome, Waiting)
            assert outcome.challenge is not None
            assert f"{left} attempt" in outcome.challenge.message
        outcome = await harness.submit({"code": wrong})
        assert signals(outcome) == ("wrong_code", "attempts_exhausted")
        assert isinstance(outcome, Finished)
        assert outcome.result.facts["wrong_attempts"] == 5

    async def test_locked_out_refuses_even_the_right_code(self) -> None:
        """Once the wrong attempts are used up the right code is refused too."""
        harness = Harness()
        await harness.start()
        assert harness.state is not None
        harness.state = attrs.evolve(harness.state, wrong=5)
        outcome = await harness.submit({"code": harness.fake.code})
        assert signals(outcome) == ("wrong_code", "attempts_exhausted")
        resend = await harness.submit({"action": "resend"})
        assert signals(resend) == ("wrong_code", "attempts_exhausted")

    async def test_expired_code_is_never_compared(self) -> None:
        """After the TTL the right code is refused and nothing is counted."""
        harness = Harness()
        await harness.start()
        code = harness.fake.code
        await harness.clock.advance(300)
        outcome = await harness.submit({"code": code})
        assert isinstance(outcome, Waiting)
        assert outcome.state.wrong == 0
        assert outcome.state.expired
        assert outcome.challenge is not None
        assert outcome.challenge.expires_at is None

    async def test_expiry_timer(self) -> None:
        """The expiry timer lapses the code; an early or repeated one changes nothing."""
        harness = Harness(settings=SmsCodeSettings(max_sends=2, resend_cooldown=0))
        await harness.start()
        early = await harness.send(TimerDue(name="code_expiry", at=harness.clock.now()))
        assert isinstance(early, Waiting)
        assert not early.state.expired
        await harness.clock.advance(300)
        lapsed = await harness.send(
            TimerDue(name="code_expiry", at=harness.clock.now())
        )
        assert isinstance(lapsed, Waiting)
        assert lapsed.state.expired
        again = await harness.send(TimerDue(name="code_expiry", at=harness.clock.now()))
        assert again.state == lapsed.state
        other = await harness.send(
            TimerDue(name="something_else", at=harness.clock.now())
        )
        assert other.state == lapsed.state
        await harness.submit({"action": "resend"})
        await harness.clock.advance(300)
        last = await harness.send(TimerDue(name="code_expiry", at=harness.clock.now()))
        assert signals(last) == ("code_expired",)

    @pytest.mark.parametrize(
        "typed",
        [
            "１２３４５６",  # noqa: RUF001 - full-width digits on purpose
            "١٢٣٤٥٦",
            " 123 456 ",
            "123\u00a0456",
            "12\u30003456\n",
            "१२३४५६",
        ],
    )
    def test_unicode_digits_and_whitespace_are_normalised(self, typed: str) -> None:
        """Full-width, Arabic-Indic and Devanagari digits and any whitespace become 123456."""
        assert normalize_code(typed) == "123456"

    def test_a_typed_value_far_longer_than_any_code_is_refused_unread(self) -> None:
        """A megabyte typed as a code is refused at once, not normalised character by character."""
        with pytest.raises(InvalidInputError, match="too long") as refused:
            normalize_code("1" * 1_000_000)
        assert refused.value.field == "code"
        spaced = " 1 2 3 4 5 6 7 8 9 0 " * 3  # a long code with spaces still reads
        assert normalize_code(spaced) == "123456789012345678901234567890"

    async def test_normalised_code_passes(self) -> None:
        """A right code typed in full-width digits with spaces passes."""
        harness = Harness()
        await harness.start()
        full_width = " ".join(chr(0xFF10 + int(d)) for d in harness.fake.code)
        assert signals(await harness.submit({"code": full_width})) == ("code_verified",)

    @pytest.mark.parametrize("typed", ["12345", "1234567", "12a456", "", 123456])
    async def test_malformed_code_is_a_typed_error_and_not_counted(
        self, typed: object
    ) -> None:
        """A code of the wrong length or alphabet, or not text, is refused uncounted."""
        harness = Harness()
        await harness.start()
        with pytest.raises(InvalidInputError) as info:
            await harness.submit({"code": typed})
        assert info.value.field == "code"
        assert harness.state is not None
        assert harness.state.wrong == 0

    async def test_malformed_payload(self) -> None:
        """A payload with neither a code nor the resend action is refused."""
        harness = Harness()
        await harness.start()
        with pytest.raises(InvalidInputError, match="payload"):
            await harness.submit({"hello": "world"})
        with pytest.raises(InvalidInputError, match="state"):
            await harness.channel.handle(
                harness.context(), None, Submission(payload={})
            )

    async def test_options_override_the_settings(self) -> None:
        """A step's options set the code length, alphabet, TTL and locale."""
        harness = Harness()
        outcome = await harness.start(
            options={"code_length": 8, "ttl": "10m", "locale": "en", "alphabet": "AB"}
        )
        (message,) = harness.fake.sent
        assert re.fullmatch(r"[AB]{8}", message.code)
        assert message.locale == "en"
        assert message.ttl_minutes == 10
        assert isinstance(outcome, Waiting)
        assert outcome.state.expires_at == harness.clock.now() + timedelta(minutes=10)

    @pytest.mark.parametrize(
        "options",
        [
            {"code_length": 3},
            {"code_length": 11},
            {"ttl": "soon"},
            {"max_attempts": 0},
            {"alphabet": "11"},
        ],
    )
    async def test_bad_options(self, options: dict[str, Any]) -> None:
        """An option out of range is a configuration error, before anything is sent."""
        harness = Harness()
        with pytest.raises(ConfigurationError):
            await harness.start(options=options)
        assert harness.fake.calls == 0

    async def test_hmac_is_bound_to_the_send_and_keyed(self) -> None:
        """The same code gives different digests for another send or another secret."""
        harness = Harness()
        context = harness.context()
        first = harness.channel._digest(context, 1, "123456")
        assert first != harness.channel._digest(context, 2, "123456")
        other = SmsCodeChannel(
            [FakeSms()], secret="another-secret-0123456789", brand="Acme"
        )
        assert first != other._digest(context, 1, "123456")


class TestResend:
    async def test_resend_after_cooldown_replaces_the_code(self) -> None:
        """A resend waits for the cooldown; the new code works and the old one no longer does."""
        harness = Harness()
        await harness.start()
        old = harness.fake.code
        with pytest.raises(QuotaExceededError) as info:
            await harness.submit({"action": "resend"})
        assert info.value.quota == "resend_cooldown"
        assert info.value.retry_at == harness.clock.now() + timedelta(seconds=60)
        await harness.clock.advance(60)
        outcome = await harness.submit({"action": "resend"})
        assert isinstance(outcome, Waiting)
        assert outcome.state.sends == 2
        new = harness.fake.code
        assert harness.fake.sent[-1].reference == "s1:sms:1:2"
        if new != old:
            wrong = await harness.submit({"code": old})
            assert isinstance(wrong, Waiting)
            assert wrong.state.wrong == 1
        assert signals(await harness.submit({"code": new})) == ("code_verified",)

    async def test_max_sends(self) -> None:
        """No more than ``max_sends`` codes go out per attempt."""
        harness = Harness(settings=SmsCodeSettings(max_sends=2, resend_cooldown=0))
        await harness.start()
        await harness.submit({"action": "resend"})
        with pytest.raises(QuotaExceededError) as info:
            await harness.submit({"action": "resend"})
        assert info.value.quota == "max_sends"
        assert len(harness.fake.sent) == 2

    async def test_wrong_attempts_survive_a_resend(self) -> None:
        """A resend does not reset the wrong attempts: no brute force by resending."""
        harness = Harness(settings=SmsCodeSettings(max_attempts=2, resend_cooldown=0))
        await harness.start()
        await harness.submit(
            {"code": "999999" if harness.fake.code != "999999" else "888888"}
        )
        await harness.submit({"action": "resend"})
        code = harness.fake.code
        wrong = "999999" if code != "999999" else "888888"
        assert signals(await harness.submit({"code": wrong})) == (
            "wrong_code",
            "attempts_exhausted",
        )

    async def test_resend_takes_the_client_ip_from_the_payload(self) -> None:
        """The payload's client IP is counted; a malformed one is refused."""
        limits = SmsLimits(per_client_ip=(RateLimit(limit=1, window=3600),))
        harness = Harness(limits=limits, settings=SmsCodeSettings(resend_cooldown=0))
        await harness.start(who=applicant(client_ip=None))
        with pytest.raises(InvalidInputError):
            await harness.submit({"action": "resend", "client_ip": "not-an-ip"})
        await harness.submit({"action": "resend", "client_ip": "203.0.113.9"})
        with pytest.raises(QuotaExceededError) as info:
            await harness.submit({"action": "resend", "client_ip": "203.0.113.9"})
        assert info.value.quota == "client_ip"


class TestNumbers:
    @pytest.mark.parametrize(
        ("number", "reason", "limits"),
        [
            ("+442079460000", "not_mobile", SmsLimits()),  # UK fixed line (drama range)
            ("+19005550123", "premium_rate", SmsLimits()),
            ("+449098790000", "premium_rate", SmsLimits()),
            ("+447911123456", "premium_rate", SmsLimits(blocked_prefixes=["+44791"])),
            ("+447911123456", "country_not_allowed", SmsLimits(countries=["CN"])),
            ("+447911123456", "country_not_allowed", SmsLimits(prefixes=["+86"])),
        ],
    )
    async def test_refused_numbers_send_nothing(
        self, number: str, reason: str, limits: SmsLimits
    ) -> None:
        """A refused number is a typed error raised before any vendor is called."""
        harness = Harness(limits=limits)
        with pytest.raises(PhoneNumberRefusedError) as info:
            harness.channel.check_number(number)
        assert info.value.reason == reason
        assert info.value.field == "phone"
        assert number not in str(info.value)
        with pytest.raises(PhoneNumberRefusedError):
            await harness.start(who=applicant(number))
        assert harness.fake.calls == 0

    @pytest.mark.parametrize("number", ["+86 138 0013 8000", "+447911123456"])
    def test_allowed_numbers(self, number: str) -> None:
        """Mobiles in allowed countries pass and come back in E.164."""
        assert Harness().channel.check_number(number).startswith("+")

    @pytest.mark.parametrize("number", ["not a number", "+861234"])
    def test_invalid_numbers(self, number: str) -> None:
        """Unparseable or invalid numbers are refused as invalid."""
        with pytest.raises(PhoneNumberRefusedError) as info:
            Harness().channel.check_number(number)
        assert info.value.reason == "invalid"

    def test_fixed_lines_pass_when_mobile_is_not_required(self) -> None:
        """``require_mobile=False`` lets a fixed line through."""
        harness = Harness(limits=SmsLimits(require_mobile=False))
        assert harness.channel.check_number("+442079460000") == "+442079460000"


class TestLimits:
    async def test_per_phone_window_holds_across_replicas(self) -> None:
        """Two channels on one store count the same number's sends; the window slides."""
        store, clock = MemoryStore(), FakeClock()
        limits = SmsLimits(per_phone=(RateLimit(limit=2, window=3600),))
        one = Harness(limits=limits, shared=store, clock=clock)
        two = Harness(limits=limits, shared=store, clock=clock)
        await one.start(session_id="s1")
        await two.start(session_id="s2")
        with pytest.raises(QuotaExceededError) as info:
            await one.start(session_id="s3")
        assert info.value.quota == "phone"
        assert info.value.retry_at == clock.now() + timedelta(hours=1)
        assert one.fake.calls + two.fake.calls == 2
        await clock.advance(3600)
        await two.start(session_id="s4")
        assert two.fake.calls == 2

    async def test_per_applicant_and_per_ip(self) -> None:
        """Sends are limited per applicant, and per client IP across applicants."""
        limits = SmsLimits(
            per_applicant=(RateLimit(limit=1, window="1d"),),
            per_client_ip=(RateLimit(limit=2, window="1h"),),
            per_phone=(),
        )
        harness = Harness(limits=limits)
        await harness.start(session_id="s1", who=applicant(applicant_id="a"))
        with pytest.raises(QuotaExceededError) as info:
            await harness.start(session_id="s2", who=applicant(applicant_id="a"))
        assert info.value.quota == "applicant"
        await harness.start(
            session_id="s3", who=applicant("+8613900139000", applicant_id="b")
        )
        with pytest.raises(QuotaExceededError) as ip:
            await harness.start(
                session_id="s4", who=applicant("+8613700137000", applicant_id="c")
            )
        assert ip.value.quota == "client_ip"
        await harness.start(
            session_id="s5",
            who=applicant("+8613700137000", applicant_id="d", client_ip=None),
        )

    async def test_a_replica_that_loses_the_claim_gives_its_count_back(self) -> None:
        """Two replicas starting one send count it once: the one that lost the ledger claim refunds."""
        store, clock = MemoryStore(), FakeClock()
        view = Interleaved(store, "put_value")  # two starts before one's claim
        limits = SmsLimits(per_phone=(RateLimit(limit=2, window=3600),))
        one = Harness(limits=limits, shared=view, clock=clock)
        two = Harness(limits=limits, shared=store, clock=clock)
        view.before = two.start

        assert isinstance(await one.start(), Waiting)  # takes up two's send

        assert one.fake.calls + two.fake.calls == 1
        await one.start(session_id="s2")
        with pytest.raises(QuotaExceededError) as info:
            await one.start(session_id="s3")
        assert info.value.quota == "phone"

    async def test_a_ledger_entry_changed_elsewhere_keeps_its_limits(self) -> None:
        """A failed send whose ledger entry another replica changed leaves the entry and its count to it."""
        limits = SmsLimits(per_phone=(RateLimit(limit=1, window=3600),))
        failing = FakeSms(
            "alpha", [ProviderRateLimitedError(message="slow", provider="alpha")]
        )
        harness = Harness([failing], limits=limits, shared=KeepsValues())
        with pytest.raises(ProviderRateLimitedError):
            await harness.start()

        with pytest.raises(QuotaExceededError) as info:
            await harness.start(session_id="s2")
        assert info.value.quota == "phone"

    async def test_a_refund_the_store_refuses_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A refund that cannot reach the store leaves the entry to lapse, and the refusal stands."""
        limits = SmsLimits(per_client_ip=(RateLimit(limit=1, window=3600),))
        _, refused = await second_send_refused(NoRefunds(), limits)

        assert refused.quota == "client_ip"
        assert "could not give back an SMS quota entry" in caplog.text

    async def test_a_send_takes_its_limits_and_spend_in_one_atomic_call(self) -> None:
        """Every limit and the first vendor's spend caps go in one call; a refusal then gives nothing back, as nothing was taken."""
        limits = SmsLimits(
            per_phone=(
                RateLimit(limit=5, window=3600),
                RateLimit(limit=9, window="1d"),
            ),
            per_client_ip=(RateLimit(limit=1, window=3600),),
            prices={"alpha": 0.04},
            session_spend=1,
            daily_spend=1,
        )
        store = MemoryStore()
        view = Atomic(store)
        harness, refused = await second_send_refused(view, limits)

        assert refused.quota == "client_ip"
        assert refused.retry_at == harness.clock.now() + timedelta(hours=1)
        assert view.calls == ["consume_all", "consume_all"]
        # The first send's alone: 2 per phone, 1 applicant, 1 IP, 2 spend.
        assert sum(map(len, store._windows.values())) == 6
        assert [sent.cost for sent in harness.sent] == [0.04]

    async def test_a_spend_cap_refusal_takes_no_send_limit(self) -> None:
        """A send over the daily spend never counted against its number: nothing to give back."""
        limits = SmsLimits(
            per_phone=(RateLimit(limit=1, window=3600),),
            prices={"alpha": 1.0},
            daily_spend=1.0,
        )
        store = MemoryStore()
        view = Atomic(store)
        _, refused = await second_send_refused(view, limits)

        assert refused.quota == "daily_spend"
        assert "refund" not in view.calls
        phones = [n for key, n in store._windows.items() if ":phone:" in key]
        assert sorted(map(len, phones)) == [0, 1]  # the first number's send alone

    async def test_a_store_without_atomic_takes_counts_one_limit_at_a_time(
        self,
    ) -> None:
        """A SharedState written before consume_all: each limit is consumed in turn, and a refusal gives back those before it."""
        limits = SmsLimits(
            per_phone=(RateLimit(limit=1, window=3600),),
            per_client_ip=(RateLimit(limit=1, window=3600),),
        )
        view = OneByOne(MemoryStore())
        other = applicant("+8613900139000", applicant_id="b")
        harness, refused = await second_send_refused(view, limits, other)

        assert refused.quota == "client_ip"
        # phone, applicant and IP for each send; the second gives two back.
        assert view.calls == ["consume"] * 6 + ["refund"] * 2
        await harness.start(session_id="s3", who=attrs.evolve(other, client_ip=None))

    async def test_keys_never_hold_personal_data(self) -> None:
        """The store's keys hold keyed digests, not the number, applicant id or IP."""
        harness = Harness()
        await harness.start()
        keys = " ".join([*harness.shared._windows, *harness.shared._values])
        for personal in ("13800138000", "app-1", "198.51.100.7"):
            assert personal not in keys

    async def test_spend_caps(self) -> None:
        """Sends are priced per vendor and segment; the session and daily caps hold."""
        limits = SmsLimits(prices={"alpha": 0.04}, session_spend=0.1, daily_spend=0.15)
        harness = Harness(limits=limits, settings=SmsCodeSettings(resend_cooldown=0))
        await harness.start(session_id="s1")
        await harness.submit({"action": "resend"}, session_id="s1")
        with pytest.raises(QuotaExceededError) as session:
            await harness.submit({"action": "resend"}, session_id="s1")
        assert session.value.quota == "session_spend"
        await harness.start(session_id="s2", who=applicant("+8613900139000"))
        with pytest.raises(QuotaExceededError) as daily:
            await harness.start(session_id="s3", who=applicant("+8613700137000"))
        assert daily.value.quota == "daily_spend"
        assert [sent.cost for sent in harness.sent] == [0.04, 0.04, 0.04]

    def test_caps_need_prices(self) -> None:
        """Spend caps without a price for every provider are a configuration error."""
        with pytest.raises(ConfigurationError, match="price"):
            SmsCodeChannel(
                [FakeSms()],
                secret=SECRET,
                brand="Acme",
                limits=SmsLimits(daily_spend=10),
            )

    @pytest.mark.parametrize(
        "build",
        [
            lambda: RateLimit(limit=0, window=60),
            lambda: RateLimit(limit=1, window=0),
            lambda: SmsLimits(prefixes=["86"]),
            lambda: SmsLimits(prices={"a": -1}),
            lambda: SmsLimits(session_spend=0),
            lambda: SmsCodeSettings(resend_cooldown=-1),
            lambda: SmsCodeSettings(alphabet="0 1"),
            lambda: SmsCodeSettings(alphabet="".join(map(chr, range(256, 513)))),
        ],
    )
    def test_bad_limits(self, build: Any) -> None:
        """Nonsense limits are refused when built."""
        with pytest.raises(ConfigurationError):
            build()


class TestMessages:
    async def test_templates_and_segments_per_locale(self) -> None:
        """zh-CN texts are UCS-2, English ones GSM-7; each send reports its segments."""
        harness = Harness()
        await harness.start(session_id="s1")
        await harness.start(
            session_id="s2", who=applicant("+447911123456", locale="en-GB")
        )
        zh, en = harness.fake.sent
        assert zh.text.startswith("【Acme】")
        assert "5分钟" in zh.text
        assert en.text.startswith("Acme: your verification code is ")
        assert "5 minutes" in en.text
        assert [s.encoding for s in harness.sent] == [
            SmsEncoding.UCS2,
            SmsEncoding.GSM7,
        ]
        assert [s.segments for s in harness.sent] == [1, 1]
        assert harness.sent[0].destination == "+86*******8000"
        assert harness.sent[0].reason == "start"

    async def test_custom_template(self) -> None:
        """An app's own template is used; one without ``{code}`` is refused."""
        harness = Harness(
            templates={
                "zh-CN": SmsTemplate("{brand} {code}"),
                "en": SmsTemplate("{code} is your {brand} code, valid {minutes} min"),
            }
        )
        await harness.start()
        assert harness.fake.sent[0].text == f"Acme {harness.fake.code}"
        with pytest.raises(ConfigurationError, match="code"):
            SmsTemplate("no code here")
        for hidden in ("your code: {{code}}", "your code: {code:.2}"):
            # An escaped field is literal text; a precision cuts the code short.
            with pytest.raises(ConfigurationError, match="does not contain"):
                SmsTemplate(hidden)
        with pytest.raises(ConfigurationError, match="only"):
            SmsTemplate("{code} {name}")
        with pytest.raises(ConfigurationError, match="template"):
            SmsCodeChannel(
                [FakeSms()],
                secret=SECRET,
                brand="A",
                templates={"en": SmsTemplate("{code}")},
            )

    async def test_a_failing_hook_does_not_fail_the_send(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An on_send hook that raises is logged and the code still goes out."""

        async def broken(sent: SmsSent) -> None:
            raise RuntimeError("boom")

        channel = SmsCodeChannel(
            [FakeSms()], secret=SECRET, brand="Acme", on_send=[broken]
        )
        harness = Harness()
        outcome = await channel.start(harness.context())
        assert isinstance(outcome, Waiting)
        assert "on_send hook failed" in caplog.text


class TestFailover:
    async def test_permanent_failure_moves_to_the_next_vendor(self) -> None:
        """A vendor's permanent refusal sends a fresh code through the next one."""
        first = FakeSms(
            "alpha", [ProviderRejectedError(message="no", provider="alpha")]
        )
        second = FakeSms("beta")
        harness = Harness([first, second])
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        assert outcome.state.provider == "beta"
        assert outcome.state.tried == ("beta",)
        assert len(second.sent) == 1
        assert signals(await harness.submit({"code": second.code})) == (
            "code_verified",
        )

    async def test_every_vendor_refusing_raises_the_last_error(self) -> None:
        """When every vendor refuses, the last refusal is raised."""
        first = FakeSms("alpha", [ProviderRejectedError(message="a", provider="alpha")])
        second = FakeSms("beta", [ProviderRejectedError(message="b", provider="beta")])
        with pytest.raises(ProviderRejectedError, match="b"):
            await Harness([first, second]).start()

    async def test_the_step_names_the_first_vendor(self) -> None:
        """The policy's provider for the attempt is tried first, the others after it."""
        first, second = FakeSms("alpha"), FakeSms("beta")
        harness = Harness([first, second])
        await harness.start(provider="beta")
        assert (len(first.sent), len(second.sent)) == (0, 1)
        with pytest.raises(ConfigurationError, match="gamma"):
            await harness.start(provider="gamma", session_id="s2")

    async def test_number_rejected_by_a_vendor_ends_the_step(self) -> None:
        """A vendor refusing the number fails the step; no other vendor is tried."""
        first = FakeSms(
            "alpha",
            [
                ProviderNumberRejectedError(
                    message="bad", provider="alpha", code="21211"
                )
            ],
        )
        second = FakeSms("beta")
        outcome = await Harness([first, second]).start()
        assert signals(outcome) == ("invalid_number",)
        assert second.calls == 0

    async def test_undelivered_receipt_fails_over(self) -> None:
        """An undelivered receipt sends a fresh code through the next vendor; the old one dies."""
        first, second = FakeSms("alpha"), FakeSms("beta")
        harness = Harness([first, second])
        await harness.start()
        old = first.code
        undelivered = receipt(
            {
                "message_id": "alpha-1",
                "status": "undelivered",
                "error_code": "30003",
            }
        )
        outcome = await harness.send(undelivered)
        assert isinstance(outcome, Waiting)
        assert outcome.state.provider == "beta"
        assert outcome.state.tried == ("alpha", "beta")
        assert harness.sent[-1].reason == "failover"
        assert second.sent[0].reference == "s1:sms:1:2"
        if second.code != old:
            stale = await harness.submit({"code": old})
            assert isinstance(stale, Waiting)
        assert signals(await harness.submit({"code": second.code})) == (
            "code_verified",
        )

    async def test_undelivered_everywhere_fails_the_step(self) -> None:
        """When no vendor is left, an undelivered receipt fails the step."""
        harness = Harness()
        await harness.start()
        outcome = await harness.send(
            receipt({"message_id": "alpha-1", "status": "failed"})
        )
        assert signals(outcome) == ("undelivered",)

    async def test_failover_that_fails_ends_the_step(self) -> None:
        """A failover refused by the next vendor ends the step as undelivered."""
        second = FakeSms(
            "beta", [ProviderUnavailableError(message="down", provider="beta")]
        )
        harness = Harness([FakeSms("alpha"), second])
        await harness.start()
        outcome = await harness.send(
            receipt({"message_id": "alpha-1", "status": "undelivered"})
        )
        assert signals(outcome) == ("undelivered",)
        assert isinstance(outcome, Finished)
        assert "failover failed" in outcome.result.detail

    async def test_a_failover_error_quoting_the_number_is_masked(self) -> None:
        """A vendor error that quotes the number reaches the result's detail masked."""
        second = FakeSms(
            "beta",
            [
                ProviderUnavailableError(
                    message=f"The 'To' number {PHONE} is unreachable", provider="beta"
                )
            ],
        )
        harness = Harness([FakeSms("alpha"), second])
        await harness.start()
        outcome = await harness.send(
            receipt({"message_id": "alpha-1", "status": "undelivered"})
        )
        assert isinstance(outcome, Finished)
        assert PHONE[1:] not in outcome.result.detail
        assert "+86*******8000" in outcome.result.detail

    async def test_other_receipts(self) -> None:
        """A delivered receipt is noted; receipts of older messages and other states change nothing."""
        harness = Harness()
        await harness.start()
        before = harness.state
        stale = await harness.send(
            receipt({"message_id": "old", "status": "undelivered"})
        )
        assert stale.state == before
        sent = await harness.send(receipt({"message_id": "alpha-1", "status": "sent"}))
        assert sent.state == before
        delivered = await harness.send(
            receipt({"message_id": "alpha-1", "status": "delivered"})
        )
        assert delivered.state.delivered
        other = await harness.send(
            ProviderEvent(session_id="s1", step_id="sms", kind="other")
        )
        assert other.state == delivered.state


class TestIdempotency:
    async def test_retry_after_a_certain_failure_sends_once(self) -> None:
        """A throttled send is retried under the same reference and goes out once."""
        fake = FakeSms(
            errors=[
                ProviderRateLimitedError(
                    message="slow", provider="alpha", retry_after=1
                )
            ]
        )
        harness = Harness([fake])
        with pytest.raises(ProviderRateLimitedError):
            await harness.start()
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        assert [m.reference for m in fake.sent] == ["s1:sms:1:1"]
        assert len(harness.sent) == 1

    async def test_uncertain_send_confirmed_by_the_vendor_is_not_repeated(self) -> None:
        """After a timeout, a vendor that finds the send by reference keeps that code working."""
        fake = FakeSms(
            errors=[
                ProviderUnavailableError(
                    message="timeout", provider="alpha", uncertain=True
                )
            ],
            deliver_before_error=True,
        )
        fake.findable = True
        harness = Harness([fake])
        with pytest.raises(ProviderUnavailableError):
            await harness.start()
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        assert len(fake.sent) == 1
        assert fake.finds == ["s1:sms:1:1"]
        assert harness.sent == []  # nothing new went out
        assert signals(await harness.submit({"code": fake.code})) == ("code_verified",)

    async def test_uncertain_send_not_confirmed_is_made_safe(self) -> None:
        """A vendor that cannot confirm the send gets a fresh code under the next reference."""
        fake = FakeSms(
            errors=[
                ProviderUnavailableError(
                    message="timeout", provider="alpha", uncertain=True
                )
            ],
            deliver_before_error=True,
        )
        harness = Harness([fake])
        with pytest.raises(ProviderUnavailableError):
            await harness.start()
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        lost, fresh = fake.sent
        assert (lost.reference, fresh.reference) == ("s1:sms:1:1", "s1:sms:1:2")
        assert outcome.state.sends == 2
        if lost.code != fresh.code:
            stale = await harness.submit({"code": lost.code})
            assert isinstance(stale, Waiting)
            assert stale.state.wrong == 1
        assert signals(await harness.submit({"code": fresh.code})) == ("code_verified",)

    async def test_resume_after_a_crash_takes_up_the_send(self) -> None:
        """A start run again after its send succeeded (a crash before saving) sends nothing."""
        harness = Harness()
        first = await harness.start()
        second = await harness.start()
        assert first.state == second.state
        assert len(harness.fake.sent) == 1

    async def test_a_send_in_flight_elsewhere(self) -> None:
        """A pending send of another replica refuses a second one, then counts as uncertain."""
        harness = Harness()
        await harness.channel._state_store(harness.context()).put_value(
            "multiverify:sms:send:s1:sms:1:1",
            f'{{"status": "pending", "at": "{harness.clock.now().isoformat()}", "charged": [], "provider": "alpha", "digest": "x"}}',
            at=harness.clock.now(),
            ttl=86400,
        )
        with pytest.raises(QuotaExceededError) as info:
            await harness.start()
        assert info.value.quota == "send_in_progress"
        await harness.clock.advance(31)
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        assert [m.reference for m in harness.fake.sent] == ["s1:sms:1:2"]
        assert harness.fake.finds == ["s1:sms:1:1"]

    async def test_the_in_flight_window_is_configurable(self) -> None:
        """``in_flight`` sets how long a pending send of another replica is waited for."""
        harness = Harness(in_flight=5)
        await harness.channel._state_store(harness.context()).put_value(
            "multiverify:sms:send:s1:sms:1:1",
            f'{{"status": "pending", "at": "{harness.clock.now().isoformat()}", "charged": [], "provider": "alpha", "digest": "x"}}',
            at=harness.clock.now(),
            ttl=86400,
        )
        with pytest.raises(QuotaExceededError) as info:
            await harness.start()
        assert info.value.retry_at == harness.clock.now() + timedelta(seconds=5)
        await harness.clock.advance(6)
        assert isinstance(await harness.start(), Waiting)

    async def test_an_uncertain_send_is_confirmed_by_its_text(self) -> None:
        """A send's code comes from its reference, so the lookup probe carries the text that went out."""

        class ByText(FakeSms):
            async def find(
                self, message: SmsMessage, /, *, sent_after: datetime
            ) -> SmsReceipt | None:
                self.finds.append(message.reference)
                if any(m.text == message.text for m in self.sent):
                    return SmsReceipt(provider=self.name, message_id="listed")
                return None

        fake = ByText(
            errors=[
                ProviderUnavailableError(message="t", provider="alpha", uncertain=True)
            ],
            deliver_before_error=True,
        )
        harness = Harness([fake])
        with pytest.raises(ProviderUnavailableError):
            await harness.start()
        await harness.clock.advance(31)
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        assert len(fake.sent) == 1  # confirmed: nothing sent again
        assert signals(await harness.submit({"code": fake.code})) == ("code_verified",)

    async def test_max_sends_bounds_fresh_codes(self) -> None:
        """Uncertain sends never push past ``max_sends``."""
        error = ProviderUnavailableError(
            message="timeout", provider="alpha", uncertain=True
        )
        fake = FakeSms(errors=[error, error])
        harness = Harness([fake], settings=SmsCodeSettings(max_sends=2))
        for _ in range(2):
            with pytest.raises(ProviderUnavailableError):
                await harness.start()
        with pytest.raises(QuotaExceededError) as info:
            await harness.start()
        assert info.value.quota == "max_sends"

    async def test_a_failing_lookup_counts_as_unconfirmed(self) -> None:
        """A vendor lookup that fails itself leaves the send unconfirmed: a fresh code goes out."""

        class Broken(FakeSms):
            async def find(
                self, message: SmsMessage, /, *, sent_after: datetime
            ) -> SmsReceipt | None:
                raise ProviderUnavailableError(message="down", provider=self.name)

        fake = Broken(
            errors=[
                ProviderUnavailableError(message="t", provider="alpha", uncertain=True)
            ]
        )
        harness = Harness([fake])
        with pytest.raises(ProviderUnavailableError):
            await harness.start()
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        assert outcome.state.reference == "s1:sms:1:2"

    async def test_without_a_shared_store_the_process_keeps_the_ledger(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A store without shared state falls back to this process, with a warning."""
        harness = Harness()
        context = attrs.evolve(harness.context(), shared=None)
        await harness.channel.start(context)
        await harness.channel.start(context)
        assert len(harness.fake.sent) == 1
        assert "this process only" in caplog.text


class TestVendorCode:
    async def test_lifecycle(self) -> None:
        """Start, a wrong code counted, the right code approved by the vendor."""
        vendor = FakeVerify()
        harness = Harness([vendor])
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        assert outcome.state.vendor_code
        assert outcome.state.digest == ""
        assert vendor.requests[0].client_ip == "198.51.100.7"
        assert vendor.requests[0].code_length == 6
        wrong = await harness.submit({"code": "123456"})
        assert isinstance(wrong, Waiting)
        assert wrong.state.wrong == 1
        assert signals(await harness.submit({"code": vendor.code})) == (
            "code_verified",
        )

    async def test_resend_cancels_the_old_verification(self) -> None:
        """A resend cancels the vendor's verification before starting a new one."""
        vendor = FakeVerify()
        harness = Harness([vendor], settings=SmsCodeSettings(resend_cooldown=0))
        await harness.start()
        await harness.submit({"action": "resend"})
        assert vendor.cancelled == ["VE1"]
        assert harness.state is not None
        assert harness.state.verification_id == "VE2"

    async def test_a_cancel_that_fails_does_not_stop_the_resend(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When the old verification cannot be cancelled, the new code still goes out."""

        class Stuck(FakeVerify):
            async def cancel(self, verification_id: str, /) -> None:
                raise ProviderUnavailableError(message="down", provider=self.name)

        vendor = Stuck()
        harness = Harness([vendor], settings=SmsCodeSettings(resend_cooldown=0))
        await harness.start()
        outcome = await harness.submit({"action": "resend"})
        assert isinstance(outcome, Waiting)
        assert outcome.state.verification_id == "VE2"
        assert "could not cancel" in caplog.text

    async def test_vendor_expiry_and_exhaustion(self) -> None:
        """A verification the vendor expired lapses; the vendor's own limit fails the step."""
        vendor = FakeVerify(max_checks=1)
        harness = Harness([vendor])
        await harness.start()
        await harness.submit({"code": "123456"})
        assert signals(await harness.submit({"code": "123456"})) == (
            "wrong_code",
            "attempts_exhausted",
        )
        other = Harness([FakeVerify()])
        await other.start()
        vendor_two = other.providers[0]
        vendor_two.expired.add("VE1")
        lapsed = await other.submit({"code": "444444"})
        assert isinstance(lapsed, Waiting)
        assert lapsed.state.expired

    async def test_uncertain_start_is_started_again_under_the_same_reference(
        self,
    ) -> None:
        """A vendor's own code cannot be looked up: the start is repeated, and the vendor dedupes."""

        vendor = UncertainFirst()
        harness = Harness([vendor])
        with pytest.raises(ProviderUnavailableError):
            await harness.start()
        outcome = await harness.start()
        assert isinstance(outcome, Waiting)
        assert [r.reference for r in vendor.requests] == ["s1:sms:1:1"]
        assert signals(await harness.submit({"code": vendor.code})) == (
            "code_verified",
        )

    async def test_a_start_again_reports_the_cost_charged_once(self) -> None:
        """The send started again after an uncertain start is reported with what it was charged, and charged once."""

        limits = SmsLimits(prices={"vendor": 0.05}, daily_spend=0.05)
        harness = Harness([UncertainFirst()], limits=limits)
        with pytest.raises(ProviderUnavailableError):
            await harness.start()

        assert isinstance(await harness.start(), Waiting)

        assert [sent.cost for sent in harness.sent] == [0.05]
        with pytest.raises(QuotaExceededError) as info:
            await harness.start(session_id="s2", who=applicant("+8613900139000"))
        assert info.value.quota == "daily_spend"

    async def test_expiry_and_cancel_cancel_the_verification(self) -> None:
        """The expiry timer and a cancelled step cancel the vendor's verification."""
        vendor = FakeVerify()
        harness = Harness([vendor])
        await harness.start()
        await harness.channel.cancel(harness.context(), harness.state)
        assert vendor.cancelled == ["VE1"]
        await harness.clock.advance(300)
        await harness.send(TimerDue(name="code_expiry", at=harness.clock.now()))
        assert vendor.cancelled == ["VE1", "VE1"]
        await harness.channel.cancel(harness.context(), None)


class TestConfiguration:
    @pytest.mark.parametrize(
        ("providers", "secret", "brand", "match"),
        [
            ([], SECRET, "A", "at least one"),
            ([FakeSms(), FakeSms()], SECRET, "A", "two SMS providers"),
            ([object()], SECRET, "A", "neither"),
            ([FakeSms()], "short", "A", "16 bytes"),
            ([FakeSms()], SECRET, " ", "brand"),
        ],
    )
    def test_refused(
        self, providers: list[Any], secret: str, brand: str, match: str
    ) -> None:
        """Wiring mistakes are configuration errors."""
        with pytest.raises(ConfigurationError, match=match):
            SmsCodeChannel(providers, secret=secret, brand=brand)

    def test_spec_and_repr(self) -> None:
        """The channel is the built-in ``sms_code`` and says its vendors."""
        channel = SmsCodeChannel(
            [FakeSms("a"), FakeVerify("b")], secret=SECRET.encode(), brand="A"
        )
        assert channel.spec.name == "sms_code"
        assert "invalid_number" in channel.spec.signals
        assert channel.state_type is SmsCodeState
        assert repr(channel) == "<multiverify.channels.SmsCodeChannel(a, b)>"

    async def test_aclose_closes_the_providers(self) -> None:
        """Closing the channel closes each provider."""
        closed: list[str] = []

        class Closing(FakeSms):
            async def aclose(self) -> None:
                closed.append(self.name)

        channel = SmsCodeChannel([Closing("a"), Closing("b")], secret=SECRET, brand="A")
        await channel.aclose()
        assert closed == ["a", "b"]

    async def test_status_callback_carries_the_route(self) -> None:
        """The callback URL gets the session, step and attempt in its query."""
        harness = Harness(status_callback="https://app.example/hooks/sms?tenant=7")
        await harness.start()
        assert harness.fake.sent[0].status_callback == (
            "https://app.example/hooks/sms?tenant=7&session_id=s1&step_id=sms&attempt=1"
        )
        plain = Harness(status_callback="https://app.example/hooks/sms")
        await plain.start()
        assert plain.fake.sent[0].status_callback == (
            "https://app.example/hooks/sms?session_id=s1&step_id=sms&attempt=1"
        )


POLICY = Policy(
    name="sms-only",
    version="1",
    steps=[Step(id="sms", channel="sms_code", timeout="10m")],
    rules=[
        Rule(outcome="approved", when="steps.sms.status == 'passed'", reason="sms.ok")
    ],
    default="rejected",
)


class TestWithTheVerifier:
    async def test_brute_force_the_sixth_attempt_is_refused(self) -> None:
        """Five wrong codes fail the step; the sixth, right, is refused by the runtime."""
        clock, fake = FakeClock(), FakeSms()
        channel = SmsCodeChannel([fake], secret=SECRET, brand="Acme")
        async with Verifier(POLICY, channels=[channel], clock=clock) as verifier:
            session = await verifier.start(applicant())
            challenge = await verifier.challenge(session.session_id, "sms")
            assert challenge.destination == "+86*******8000"
            wrong = "000000" if fake.code != "000000" else "111111"
            for _ in range(5):
                session = await verifier.submit(
                    session.session_id, "sms", {"code": wrong}
                )
            verdict = await verifier.wait(session.session_id)
            assert verdict.outcome.value == "rejected"
            with pytest.raises(SessionFinishedError):
                await verifier.submit(session.session_id, "sms", {"code": fake.code})

    async def test_code_expiry_fires_as_a_durable_timer(self) -> None:
        """The expiry is a stored timer; when it fires the code is lapsed in the session."""
        clock, fake = FakeClock(), FakeSms()
        store = MemoryStore()
        channel = SmsCodeChannel([fake], secret=SECRET, brand="Acme")
        async with Verifier(
            POLICY, channels=[channel], clock=clock, store=store
        ) as verifier:
            session = await verifier.start(applicant())
            await verifier.wait_idle()
            timers = [t.timer_id for t in await store.timers(session.session_id)]
            assert "step:sms:1:channel:code_expiry" in timers
            await clock.advance(301)
            await verifier.wait_idle()
            stored = await verifier.get(session.session_id)
            record = stored.step("sms")
            assert record.state is StepState.WAITING
            assert record.challenge is not None
            assert "expired" in record.challenge.message
            session = await verifier.submit(
                session.session_id, "sms", {"code": fake.code}
            )
            assert session.step("sms").state is StepState.WAITING
            assert record.channel_state["digest"] not in str(await store.audit_events())

    async def test_reused_code_and_finished_step(self) -> None:
        """A code accepted once cannot be used again: the step is over."""
        fake = FakeSms()
        two_steps = Policy(
            name="two",
            version="1",
            steps=[
                Step(id="sms", channel="sms_code"),
                Step(id="later", channel="sms_code", after=["sms"]),
            ],
        )
        channel = SmsCodeChannel([fake], secret=SECRET, brand="Acme")
        async with Verifier(
            two_steps, channels=[channel], clock=FakeClock()
        ) as verifier:
            session = await verifier.start(applicant())
            await verifier.challenge(session.session_id, "sms")
            first = fake.code
            await verifier.submit(session.session_id, "sms", {"code": first})
            with pytest.raises(StepNotWaitingError):
                await verifier.submit(session.session_id, "sms", {"code": first})

    async def test_premium_number_errors_the_step_before_any_send(self) -> None:
        """A premium-rate number errors the step with the typed error; nothing is sent."""
        fake = FakeSms()
        channel = SmsCodeChannel([fake], secret=SECRET, brand="Acme")
        async with Verifier(POLICY, channels=[channel], clock=FakeClock()) as verifier:
            session = await verifier.start(applicant("+19005550123"))
            verdict = await verifier.wait(session.session_id)
        result = verdict.steps[0].result
        assert result is not None
        assert result.status is ResultStatus.ERROR
        assert "PhoneNumberRefusedError" in result.detail
        assert fake.calls == 0


# --- the property ------------------------------------------------------------------

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("right"), st.just("")),
        st.tuples(
            st.just("wrong"), st.text(alphabet="0123456789", min_size=6, max_size=6)
        ),
        st.tuples(st.just("wait"), st.sampled_from(["30", "100", "299", "400"])),
        st.tuples(st.just("resend"), st.just("")),
    ),
    max_size=14,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS)
def test_no_sequence_accepts_a_wrong_expired_or_locked_code(
    actions: list[tuple[str, str]],
) -> None:
    """No sequence of submits accepts a wrong code, or a right one after expiry or lockout."""

    async def run() -> None:
        harness = Harness(settings=SmsCodeSettings(max_sends=3))
        await harness.start()
        max_attempts = 5
        wrong = 0
        for kind, value in actions:
            state = harness.state
            assert state is not None
            if kind == "wait":
                await harness.clock.advance(float(value))
                continue
            if kind == "resend":
                with contextlib.suppress(QuotaExceededError):
                    await harness.submit({"action": "resend"})
                continue
            current = harness.fake.code
            code = current if kind == "right" else value
            live = harness.clock.now() < state.expires_at and not state.expired
            outcome = await harness.submit({"code": code})
            if isinstance(outcome, Finished):
                if outcome.result.status is ResultStatus.PASSED:
                    assert code == current
                    assert live
                    assert wrong < max_attempts
                    return
                # Locked out or lapsed for good: the right code is refused too.
                again = await harness.submit({"code": current})
                assert not (
                    isinstance(again, Finished)
                    and again.result.status is ResultStatus.PASSED
                )
                return
            if live and code != current:
                wrong += 1
        # Whatever happened, the step never passed on a wrong or dead code.

    asyncio.run(run())


class TestEndToEnd:
    async def test_undelivered_receipt_fails_over_from_twilio_to_aliyun(self) -> None:
        """A signed Twilio 'undelivered' callback moves the code to Aliyun; its code approves."""
        router = respx.Router()
        twilio_route = router.post(
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
        ).mock(
            return_value=httpx.Response(201, json={"sid": "SM1", "status": "queued"})
        )
        aliyun_route = router.post(
            url__startswith="https://dysmsapi.aliyuncs.com/"
        ).mock(
            return_value=httpx.Response(
                200, json={"Code": "OK", "BizId": "B1", "RequestId": "R"}
            )
        )
        clock = FakeClock()
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(router.async_handler)
        ) as client:
            twilio = TwilioMessaging(
                TwilioAccount(account_sid="AC1", auth_token="token", client=client),
                from_="Acme",
            )
            aliyun = AliyunSms(
                access_key_id="AK",
                access_key_secret="S",
                sign_name="Acme",
                templates={"zh-CN": "SMS_1"},
                client=client,
                clock=clock,
            )
            channel = SmsCodeChannel(
                [twilio, aliyun],
                secret=SECRET,
                brand="Acme",
                status_callback="https://app.example/hooks/twilio-sms",
            )
            handler = TwilioMessageStatus(TwilioSignature("token"))
            async with Verifier(POLICY, channels=[channel], clock=clock) as verifier:
                session = await verifier.start(applicant())
                await verifier.challenge(session.session_id, "sms")
                sent = dict(parse_qsl(twilio_route.calls.last.request.content.decode()))
                callback_url = sent["StatusCallback"]
                params = {
                    "MessageSid": "SM1",
                    "MessageStatus": "undelivered",
                    "ErrorCode": "30003",
                }
                request = WebhookRequest(
                    method="POST",
                    url=callback_url,
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Twilio-Signature": twilio_signature(
                            "token", callback_url, params.items()
                        ),
                    },
                    body=urlencode(params).encode(),
                    received_at=clock.now(),
                )
                for event in await handler.parse(request):
                    await verifier.handle_event(event)
                assert aliyun_route.call_count == 1
                query = dict(
                    parse_qsl(urlsplit(str(aliyun_route.calls.last.request.url)).query)
                )
                assert query["OutId"].endswith(":sms:1:2")
                code = json.loads(query["TemplateParam"])["code"]
                await verifier.submit(session.session_id, "sms", {"code": code})
                verdict = await verifier.wait(session.session_id)
        assert verdict.outcome.value == "approved"
        result = verdict.steps[0].result
        assert result is not None
        assert result.facts["vendors"] == ["twilio", "aliyun"]

    async def test_throttled_start_is_retried_by_the_runtime_and_sent_once(
        self,
    ) -> None:
        """A 429 with Retry-After is retried after that delay; one text goes out."""
        fake = FakeSms(
            errors=[
                ProviderRateLimitedError(
                    message="slow", provider="alpha", retry_after=2
                )
            ]
        )
        policy = Policy(
            name="retry",
            version="1",
            steps=[
                Step(
                    id="sms",
                    channel="sms_code",
                    retry=RetrySettings(attempts=3, wait_max=5),
                )
            ],
        )
        clock = FakeClock()
        channel = SmsCodeChannel([fake], secret=SECRET, brand="Acme")
        async with Verifier(policy, channels=[channel], clock=clock) as verifier:
            session = await verifier.start(applicant())
            await verifier.wait_idle()
            await clock.advance(2)
            await verifier.challenge(session.session_id, "sms")
        assert fake.calls == 2
        assert [m.reference for m in fake.sent] == [f"{session.session_id}:sms:1:1"]

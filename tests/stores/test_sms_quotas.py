"""SMS abuse limits and spend caps on every store: a send that did not go out uses up none of them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import attrs
import pytest

from channels.fake_sms import FakeSms
from multiverify import Applicant
from multiverify.channels import (
    Finished,
    RateLimit,
    SmsCodeChannel,
    SmsLimits,
    StepContext,
    StepOutcome,
    Waiting,
)
from multiverify.exceptions import (
    ProviderNumberRejectedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    ProviderUnavailableError,
    QuotaExceededError,
)
from multiverify.stores import SessionStore, SharedState
from multiverify.testing import FakeClock
from stores.one_by_one import OneByOne

T0 = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
DAY = 86400
PHONES = ("+8613800138000", "+8613900139000", "+8613700137000", "+8613600136000")


#: One send per number an hour, and one send's price a day.
ONE_SEND = SmsLimits(
    per_phone=(RateLimit(limit=1, window=3600),),
    per_applicant=(),
    prices={"alpha": 1.0},
    daily_spend=1.0,
)


class Sends:
    """One SMS channel on a store, starting steps for applicants."""

    def __init__(
        self,
        store: SharedState,
        who: Applicant,
        limits: SmsLimits,
        *vendors: FakeSms,
    ) -> None:
        self.store = store
        self.who = who
        self.clock = FakeClock(T0)
        self.vendors = list(vendors) or [FakeSms("alpha")]
        self.channel = SmsCodeChannel(
            self.vendors,
            secret="a-server-secret-of-32-bytes-long",
            brand="Acme",
            limits=limits,
        )

    async def start(self, session_id: str, **kwargs: str | None) -> Waiting:
        """Start the SMS step of ``session_id``; it waits for the code sent."""
        outcome = await self.begin(session_id, **kwargs)
        assert isinstance(outcome, Waiting)
        return outcome

    async def begin(
        self,
        session_id: str,
        *,
        phone: str = PHONES[0],
        applicant_id: str = "a",
        client_ip: str | None = None,
    ) -> StepOutcome:
        """Start the SMS step of ``session_id``, whatever comes of it."""
        who = attrs.evolve(
            self.who, phone=phone, applicant_id=applicant_id, client_ip=client_ip
        )
        context = StepContext(
            session_id=session_id,
            step_id="sms",
            attempt=1,
            provider=None,
            idempotency_key=f"{session_id}:sms:1",
            applicant=who,
            clock=self.clock,
            shared=self.store,
        )
        return await self.channel.start(context)

    async def refused(self, session_id: str, **kwargs: str | None) -> str:
        """Start a step that a limit refuses; the quota that refused it."""
        with pytest.raises(QuotaExceededError) as info:
            await self.start(session_id, **kwargs)
        return info.value.quota


MakeSends = Callable[..., Sends]


@pytest.fixture(params=["atomic", "one by one"])
def sends_on(
    request: pytest.FixtureRequest, store: SessionStore, applicant: Applicant
) -> MakeSends:
    """Build an SMS channel on each store in turn, with limits and vendors.

    Each store twice: as it is, taking a send's limits in one atomic call,
    and as a SharedState without that capability, one at a time.
    """
    shared = store if request.param == "atomic" else OneByOne(store)

    def make(limits: SmsLimits, *vendors: FakeSms) -> Sends:
        return Sends(shared, applicant, limits, *vendors)

    return make


class TestLaterLimits:
    async def test_a_refusal_per_ip_leaves_the_phone_and_applicant_counts(
        self, sends_on: MakeSends
    ) -> None:
        """A send refused per client IP counts against neither its number nor its applicant."""
        sends = sends_on(
            SmsLimits(
                per_phone=(RateLimit(limit=2, window=3600),),
                per_applicant=(RateLimit(limit=2, window=DAY),),
                per_client_ip=(RateLimit(limit=1, window=3600),),
            ),
        )
        await sends.start("s1", client_ip="198.51.100.7")

        assert (
            await sends.refused(
                "s2", phone=PHONES[1], applicant_id="b", client_ip="198.51.100.7"
            )
            == "client_ip"
        )

        await sends.start("s3", phone=PHONES[1], applicant_id="b")
        await sends.start("s4", phone=PHONES[1], applicant_id="c")
        assert await sends.refused("s5", phone=PHONES[1], applicant_id="d") == "phone"
        await sends.start("s6", phone=PHONES[2], applicant_id="b")
        assert await sends.refused("s7", phone=PHONES[3], applicant_id="b") == (
            "applicant"
        )

    async def test_a_refusal_by_the_daily_spend_gives_the_send_limits_back(
        self, sends_on: MakeSends
    ) -> None:
        """A send over the daily spend leaves its number's count as it was; retried later, it counts once."""
        sends = sends_on(
            SmsLimits(
                per_phone=(RateLimit(limit=1, window=7 * DAY),),
                per_applicant=(),
                prices={"alpha": 1.0},
                daily_spend=1.0,
            ),
        )
        await sends.start("s1")

        assert await sends.refused("s2", phone=PHONES[1]) == "daily_spend"

        await sends.clock.advance(DAY)
        await sends.start("s2", phone=PHONES[1])
        assert await sends.refused("s3", phone=PHONES[1]) == "phone"
        assert len(sends.vendors[0].sent) == 2

    async def test_a_daily_spend_refusal_gives_back_the_session_spend(
        self, sends_on: MakeSends
    ) -> None:
        """The spend caps too: the session's spend taken before the day's refusal comes back."""
        sends = sends_on(
            SmsLimits(
                per_phone=(),
                per_applicant=(),
                prices={"alpha": 1.0},
                session_spend=1.0,
                daily_spend=1.0,
            ),
        )
        await sends.start("s1")
        assert await sends.refused("s2") == "daily_spend"

        await sends.clock.advance(DAY)

        await sends.start("s2")


class TestVendorFailures:
    async def test_a_definite_failure_gives_everything_back(
        self, sends_on: MakeSends
    ) -> None:
        """A vendor that throttled the send sent nothing: its limits and spend come back, and a retry counts afresh."""
        sends = sends_on(
            ONE_SEND,
            FakeSms(
                "alpha", [ProviderRateLimitedError(message="slow", provider="alpha")]
            ),
        )
        with pytest.raises(ProviderRateLimitedError):
            await sends.start("s1")

        await sends.start("s2")

        assert await sends.refused("s1") == "phone"
        assert await sends.refused("s3", phone=PHONES[1]) == "daily_spend"

    async def test_an_uncertain_failure_keeps_everything_counted(
        self, sends_on: MakeSends
    ) -> None:
        """A send that may have gone out (a timeout after sending) keeps its limits and spend taken."""
        sends = sends_on(
            ONE_SEND,
            FakeSms(
                "alpha",
                [
                    ProviderUnavailableError(
                        message="timed out", provider="alpha", uncertain=True
                    )
                ],
            ),
        )
        with pytest.raises(ProviderUnavailableError):
            await sends.start("s1")

        assert await sends.refused("s2") == "phone"
        assert await sends.refused("s3", phone=PHONES[1]) == "daily_spend"

    async def test_failover_charges_only_the_vendor_that_sent(
        self, sends_on: MakeSends
    ) -> None:
        """A vendor's refusal costs nothing: the next vendor's send fits a cap of one send."""
        refusing = FakeSms(
            "alpha", [ProviderRejectedError(message="no", provider="alpha")]
        )
        sending = FakeSms("beta")
        sends = sends_on(
            SmsLimits(prices={"alpha": 1.0, "beta": 1.0}, daily_spend=1.0),
            refusing,
            sending,
        )

        await sends.start("s1")

        assert len(sending.sent) == 1
        assert await sends.refused("s2", phone=PHONES[1]) == "daily_spend"

    async def test_a_refused_number_keeps_the_send_limits(
        self, sends_on: MakeSends
    ) -> None:
        """A number the vendor refused still counts per IP (the answer says something about it), but costs nothing."""
        sends = sends_on(
            SmsLimits(
                per_client_ip=(RateLimit(limit=1, window=3600),),
                prices={"alpha": 1.0},
                daily_spend=1.0,
            ),
            FakeSms(
                "alpha",
                [ProviderNumberRejectedError(message="landline", provider="alpha")],
            ),
        )
        refused = await sends.begin("s1", client_ip="198.51.100.7")
        assert isinstance(refused, Finished)
        assert refused.result.signal_names == ("invalid_number",)

        assert (
            await sends.refused(
                "s2", phone=PHONES[1], applicant_id="b", client_ip="198.51.100.7"
            )
            == "client_ip"
        )
        await sends.start("s3", phone=PHONES[2], applicant_id="c")

    async def test_after_an_uncertain_vendor_nothing_is_given_back(
        self, sends_on: MakeSends
    ) -> None:
        """Once one vendor may have sent the code, a later refusal or failure keeps the send counted."""
        uncertain = ProviderRejectedError(message="?", provider="alpha", uncertain=True)
        over_cap = sends_on(
            SmsLimits(
                per_phone=(RateLimit(limit=1, window=3600),),
                prices={"alpha": 1.0, "beta": 1.0},
                daily_spend=1.0,
            ),
            FakeSms("alpha", [uncertain]),
            FakeSms("beta"),
        )
        assert await over_cap.refused("s1") == "daily_spend"
        assert await over_cap.refused("s2") == "phone"

        failing = sends_on(
            SmsLimits(per_phone=(RateLimit(limit=1, window=3600),)),
            FakeSms("alpha", [uncertain]),
            FakeSms("beta", [ProviderRejectedError(message="no", provider="beta")]),
        )
        with pytest.raises(ProviderRejectedError, match="no"):
            await failing.start("s3", phone=PHONES[1])
        assert await failing.refused("s4", phone=PHONES[1]) == "phone"

"""The public API as an app writes it: type-checked with mypy --strict, never run."""

from __future__ import annotations

from datetime import UTC, date, datetime

from multiverify import (
    Applicant,
    ChannelResult,
    ChannelSpec,
    LoanApplication,
    Outcome,
    Policy,
    ResultStatus,
    RetrySettings,
    ReviewCase,
    ReviewDecision,
    ReviewEvent,
    ReviewQueue,
    ReviewSettings,
    Rule,
    Session,
    Step,
    Verdict,
    Verifier,
)
from multiverify.channels import Finished, ProviderEvent, StepContext, StepOutcome
from multiverify.exceptions import (
    NotInReviewError,
    ProviderError,
    ReviewClaimedError,
    StepNotWaitingError,
)
from multiverify.policy import load_policy
from multiverify.stores import (
    AtomicQuotas,
    ChangeFeed,
    PostgresStore,
    Quota,
    Quotas,
    QuotaTake,
    SharedState,
    SqliteStore,
)
from multiverify.testing import FakeClock, Scripted, ScriptedChannel


class AlwaysPasses:
    """A user-written channel satisfies the Channel protocol structurally."""

    spec = ChannelSpec(name="always", automatic=True)
    state_type = None

    async def start(self, context: StepContext, /) -> StepOutcome:
        return Finished(result=ChannelResult(status=ResultStatus.PASSED))

    async def handle(
        self, context: StepContext, state: object, message: object, /
    ) -> StepOutcome:
        raise NotImplementedError

    async def cancel(self, context: StepContext, state: object, /) -> None:
        return None


async def app() -> Outcome:
    policy = Policy(
        name="p",
        version="1",
        steps=[Step(id="a", channel="always", retry=RetrySettings(attempts=2))],
        rules=[
            Rule(outcome="approved", when="steps.a.status == 'passed'", reason="ok")
        ],
    )
    from_file: Policy = load_policy("policy.toml")
    applicant = Applicant(
        applicant_id="x",
        name="Li Wei",
        national_id="110101199003074512",
        phone="+8613800138000",
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="100", currency="CNY", term_months=3, purpose="phone"
        ),
    )
    scripted = ScriptedChannel("sms_code", [Scripted.passes()])
    async with (
        SqliteStore("sessions.db") as store,
        Verifier(
            [policy, from_file],
            channels=[AlwaysPasses(), scripted],
            store=store,
            clock=FakeClock(),
        ) as verifier,
    ):
        session: Session = await verifier.start(applicant)
        try:
            await verifier.submit(session.session_id, "a", {"code": "1234"})
        except StepNotWaitingError as exc:
            step_id: str = exc.step_id
            del step_id
        except ProviderError as exc:
            retryable: bool = exc.retryable
            del retryable
        updated: Session | None = await verifier.handle_event(
            ProviderEvent(session_id=session.session_id, step_id="a", kind="done")
        )
        del updated
        verdict: Verdict = await verifier.wait(session.session_id)
        text: str = verdict.explain()
        del text
        return verdict.outcome


async def sms_app(applicant: Applicant, verifier: Verifier) -> None:
    """The SMS code channel and its vendors, wired as an app does."""
    from multiverify.channels import (
        RateLimit,
        SmsCodeChannel,
        SmsCodeSettings,
        SmsLimits,
        SmsSent,
    )
    from multiverify.exceptions import PhoneNumberRefusedError, QuotaExceededError
    from multiverify.providers import (
        AliyunSms,
        SmsProvider,
        TencentCloudApi,
        TencentSms,
        TwilioAccount,
        TwilioMessaging,
        TwilioVerify,
        VerifyProvider,
    )
    from multiverify.webhooks import TwilioMessageStatus, TwilioSignature

    async def report(sent: SmsSent) -> None:
        segments: int = sent.segments
        del segments

    twilio = TwilioAccount(account_sid="AC1", auth_token="token")
    ours: SmsProvider = AliyunSms(
        access_key_id="a",
        access_key_secret="b",
        sign_name="Acme",
        templates={"zh-CN": "SMS_1"},
    )
    theirs: VerifyProvider = TwilioVerify(twilio, service_sid="VA1")
    channel = SmsCodeChannel(
        [
            ours,
            TencentSms(
                TencentCloudApi(secret_id="a", secret_key="b", region="ap-guangzhou"),
                sdk_app_id="1400006666",
                sign_name="Acme",
                templates={"zh-CN": "1"},
            ),
            TwilioMessaging(twilio, from_="+15005550006"),
            theirs,
        ],
        secret=b"0123456789abcdef0123456789abcdef",
        brand="Acme",
        settings=SmsCodeSettings(ttl="5m", max_attempts=5),
        limits=SmsLimits(per_phone=[RateLimit(limit=5, window="1h")]),
        on_send=[report],
        status_callback="https://app.example/hooks/twilio-sms",
    )
    try:
        number: str = channel.check_number(applicant.phone)
        del number
    except PhoneNumberRefusedError as exc:
        reason: str = exc.reason
        del reason
    try:
        await verifier.submit("s1", "sms", {"action": "resend", "client_ip": "1.2.3.4"})
    except QuotaExceededError as exc:
        quota: str = exc.quota
        del quota
    handler = TwilioMessageStatus(TwilioSignature("token"))
    del handler
    await channel.aclose()


async def phone_app(applicant: Applicant, verifier: Verifier) -> None:
    """The confirmation-call channel, its vendors, webhooks and agent desk, wired as an app does."""
    from multiverify.channels import (
        AgentDesk,
        AgentOutcome,
        AgentTask,
        Analysis,
        CallAnalyzer,
        CallScript,
        Expect,
        MismatchAction,
        PhoneCallChannel,
        Prompt,
        PromptKind,
        SpeechAnswer,
    )
    from multiverify.compliance import AttemptSchedule, CallingWindow, NextDayAt
    from multiverify.providers import (
        AgentDeskProvider,
        TwilioAccount,
        TwilioVoice,
        VoiceInstruction,
        VoiceProvider,
        VonageApplication,
        VonageVoice,
    )
    from multiverify.webhooks import (
        TwilioSignature,
        TwilioVoiceWebhook,
        VonageSignature,
        VonageVoiceWebhook,
        WebhookHandler,
    )

    class Transcripts:
        """A user's own analyzer of spoken answers."""

        async def analyze(self, answer: SpeechAnswer, /) -> Analysis:
            return Analysis(matched=answer.transcript != "", confidence=0.9)

    analyzer: CallAnalyzer = Transcripts()
    twilio: VoiceProvider = TwilioVoice(
        account=TwilioAccount(account_sid="AC1", auth_token="token"),
        from_number="+8610555010",
        callback_url="https://app.example/hooks/twilio-voice",
    )
    vonage: VoiceProvider = VonageVoice(
        application=VonageApplication(application_id="app", private_key="-----"),
        from_number="+8610555010",
        callback_url="https://app.example/hooks/vonage-voice",
        callback_key="url-key",
    )
    store = SqliteStore("verify.db")
    desk_provider = AgentDeskProvider(queue=store)
    channel = PhoneCallChannel([twilio, vonage, desk_provider], analyzer=analyzer)
    script = CallScript(
        name="short",
        recording=True,
        prompts=[
            Prompt(
                id="notice",
                kind=PromptKind.DISCLOSURE,
                recording_notice=True,
                text={"zh-CN": "本次通话将被录音。", "en": "This call is recorded."},
                expect=Expect(kind="yes_no"),
                on_mismatch=MismatchAction.CALL_BACK,
            ),
            Prompt(
                id="year",
                kind=PromptKind.IDENTITY,
                text={"zh-CN": "请输入出生年份。"},
                expect=Expect(kind="digits", length=4, source="birth_year"),
                hesitation=8.0,
            ),
        ],
    )
    window = CallingWindow(blocked_dates={date(2026, 10, 1)})
    schedule = AttemptSchedule(retries=(1800.0, NextDayAt(at=window.start)))
    del script, schedule, channel
    handlers: list[WebhookHandler] = [
        TwilioVoiceWebhook(TwilioSignature("token"), voices={"zh-CN": "Polly.Zhiyu"}),
        VonageVoiceWebhook(VonageSignature("secret"), callback_key="url-key"),
    ]
    del handlers
    goodbye = VoiceInstruction(turn=1, language="en", say=["Bye"], hangup=True)
    await twilio.hang_up("CA1", goodbye=goodbye)
    desk = AgentDesk(queue=store, submitter=verifier, clock=FakeClock())
    task: AgentTask | None = await desk.claim("agent-7", lease=600)
    if task is not None:
        applied: bool = await desk.submit(
            task.task_id,
            "agent-7",
            AgentOutcome(disposition="confirmed", answers={"year": "1990"}),
        )
        del applied


async def review_app(store: SqliteStore, policy: Policy) -> None:
    """A review desk: hooks, a channel-less Verifier, claims and decisions."""

    async def heard(session: Session, event: ReviewEvent) -> None:
        kind: str = event.kind
        del session, kind

    reviewed = Policy(
        name="p",
        version="1",
        steps=[Step(id="bureau", channel="credit_bureau")],
        review=ReviewSettings(sla="4h", fallback_after="1d", fallback=Outcome.REJECTED),
    )
    verifier = Verifier([reviewed, policy], store=store, on_review=[heard])
    queue = ReviewQueue(verifier, lease=600)
    cases: list[ReviewCase] = await queue.pending(reason="bureau.thin_file")
    del cases
    case = await queue.claim("alice", min_priority=5)
    if case is None:
        return
    age: float = case.age(verifier.clock.now())
    del age
    try:
        verdict: Verdict = await queue.decide(
            case.session_id, "alice", outcome=Outcome.APPROVED, reason="ok", note="n"
        )
    except (ReviewClaimedError, NotInReviewError):
        return
    decision: ReviewDecision | None = verdict.review
    automatic: Verdict | None = verdict.automatic
    del decision, automatic
    reader = ReviewQueue(store=store)
    await reader.release(case.session_id, "alice")


async def bureau_app(applicant: Applicant) -> None:
    """The credit-bureau channel over the HTTP adapter, wired as an app does."""
    from datetime import UTC, datetime

    import attrs

    from multiverify import Consent
    from multiverify.channels import CreditBureauChannel
    from multiverify.exceptions import ProviderResponseError, PullNotPermittedError
    from multiverify.providers import (
        BureauProvider,
        BureauReport,
        BureauRequest,
        HttpBureau,
        OAuth2Token,
        bureau_preset,
    )
    from multiverify.testing import FakeBureauProvider

    consented = attrs.evolve(
        applicant,
        consents=[
            Consent(
                reference="consent-2026-0042",
                purposes=("loan_approval",),
                granted_at=datetime(2026, 2, 1, tzinfo=UTC),
            )
        ],
    )
    gateway: BureauProvider = HttpBureau(
        "cn-credit-gateway",
        name="gateway",
        base_url="https://api.gateway.example",
        token=OAuth2Token(
            url="https://api.gateway.example/oauth2/token",
            client_id="lender-1",
            client_secret="secret",
        ),
        headers={"X-Member-Id": "m-1"},
    )
    experian = HttpBureau(
        bureau_preset("us-credit-profile"),
        name="experian",
        base_url="https://sandbox-us-api.experian.com",
        token=OAuth2Token(
            url="https://sandbox-us-api.experian.com/oauth2/v1/token",
            client_id="id",
            client_secret="secret",
            grant="password",
            username="user",
            password="pass",
        ),
        purpose_codes={"loan_approval": "08"},
    )
    channel = CreditBureauChannel(
        [gateway, experian, FakeBureauProvider()],
        secret=b"0123456789abcdef0123456789abcdef",
        purpose="loan_approval",
        reuse_ttl=7 * 86400,
        inquiry_limits={30: 4, 90: 6},
    )
    async with Verifier(
        load_policy("bureau.toml"), channels=[channel], store=SqliteStore("s.db")
    ) as replica:
        session = await replica.start(consented)
        verdict: Verdict = await replica.wait(session.session_id)
        del verdict
        result = (await replica.get(session.session_id)).step("bureau").result
        if result is not None:
            reused: bool = result.facts["reused"]
            del reused
    try:
        report: BureauReport = await experian.pull(
            BureauRequest(
                reference="s:b:1",
                applicant=consented,
                purpose="account_review",
                consent="consent-2026-0042",
            )
        )
    except PullNotPermittedError as exc:
        reason: str = exc.reason
        del reason
        return
    except ProviderResponseError as exc:
        field: str = exc.field
        del field
        return
    score: float | None = report.normalised_score
    del score
    await channel.aclose()


async def change_feed_app() -> None:
    """A store's change notifications, as an app or a store of its own uses them."""
    store = PostgresStore("postgresql://app@db/lending", notifications=True)
    behind_a_pooler = PostgresStore(
        "postgresql://app@pgbouncer/lending", notifications=False
    )
    feed: ChangeFeed = store
    every: bool = feed.notifies_every_writer
    del every

    def changed() -> None:
        pass

    unsubscribe = feed.subscribe("session-1", changed)
    unsubscribe()
    await store.aclose()
    await behind_a_pooler.aclose()


async def atomic_quotas_app() -> None:
    """Several quotas taken at once, by a store an SMS channel shares its limits through."""
    from multiverify.channels import SmsCodeChannel
    from multiverify.providers import TwilioAccount, TwilioMessaging

    store = SqliteStore("verify.db")
    quotas: AtomicQuotas = store
    answer: Quotas = await quotas.consume_all(
        [
            QuotaTake(key="sends:phone", window=3600, limit=5),
            QuotaTake(key="spend:day", window=86400, limit=100, amount=0.4),
        ],
        at=datetime.now(UTC),
    )
    each: tuple[Quota, ...] = answer.quotas
    if not answer.allowed and answer.refused and answer.refusal:
        refused: str = answer.refused.key
        retry_at: datetime | None = answer.refusal.retry_at
        del refused, retry_at
    del each
    shared: SharedState = store
    channel = SmsCodeChannel(
        [TwilioMessaging(TwilioAccount(account_sid="AC1", auth_token="t"))],
        secret="a-server-secret-of-32-bytes-long",
        brand="Acme",
        shared=shared,
    )
    await channel.aclose()
    await store.aclose()

"""The video-signing channel: liveness, a face match against the ID document, a statement read aloud.

One attempt opens one vendor session and waits. The decision arrives as a
verified webhook ([`ProviderEvent`][multiverify.channels.ProviderEvent] of
kind ``decision``) or, as a fallback and for vendors without callbacks, by
polling on durable channel timers (``poll-1``, ``poll-2``... with growing
gaps). The ``expiry`` timer ends the attempt when the link lapses, after one
last look at the vendor. A decision that arrives after the step ended is
refused by the runtime and never reopens it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._duration import parse_duration
from .._results import Challenge, ChannelResult, Evidence, ResultStatus, Signal
from .._specs import BUILTIN_CHANNELS, ChannelSpec
from ..exceptions import (
    ConfigurationError,
    InvalidInputError,
    ProviderError,
    ProviderResponseError,
)
from ..providers import (
    HolderKey,
    IdentityMatch,
    MatchResult,
    VideoDecision,
    VideoSession,
    VideoSessionRequest,
    VideoSignProvider,
    VideoStatus,
    compare_holder,
)
from ._base import (
    Finished,
    ProviderEvent,
    StepContext,
    StepMessage,
    StepOutcome,
    Submission,
    TimerDue,
    Waiting,
)
from ._named import by_name, step_provider
from ._statement import confirmation_statement

__all__ = ["VideoSignChannel", "VideoSignState"]

EXPIRY_TIMER = "expiry"
_POLL = "poll-"


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@attrs.frozen(kw_only=True)
class VideoSignState:
    """What a video-signing attempt remembers between messages (stored with the session).

    Attributes:
        provider: the provider that holds the vendor session.
        session_id: the vendor's session id.
        url: the applicant's link.
        expires_at: when the link lapses.
        statement: the confirmation the applicant reads aloud.
        statement_digest: its ``sha256:`` digest, for the evidence.
        locale: the statement's locale.
        max_resubmissions: how many resubmissions this attempt allows.
        resubmissions: the vendor attempts that were asked to resubmit.
        polls: how many times the vendor was polled.
        poll_errors: how many polls failed with a transient error.
        progress: the vendor's progress events, such as ``started``.
        stray: other vendor sessions whose decisions were ignored.
    """

    provider: str
    session_id: str
    url: str
    expires_at: datetime
    statement: str
    statement_digest: str
    locale: str
    max_resubmissions: int
    resubmissions: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    polls: int = 0
    poll_errors: int = 0
    progress: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    stray: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    @property
    def session(self) -> VideoSession:
        """The vendor session, as the provider knows it."""
        return VideoSession(
            provider=self.provider,
            session_id=self.session_id,
            url=self.url,
            expires_at=self.expires_at,
        )


_STATUS = {
    VideoStatus.APPROVED: ResultStatus.PASSED,
    VideoStatus.DECLINED: ResultStatus.FAILED,
    VideoStatus.RESUBMISSION_REQUESTED: ResultStatus.INCONCLUSIVE,
    VideoStatus.EXPIRED: ResultStatus.TIMEOUT,
    VideoStatus.ABANDONED: ResultStatus.INCONCLUSIVE,
    VideoStatus.REVIEW: ResultStatus.INCONCLUSIVE,
}


def _signals(decision: VideoDecision) -> list[Signal]:
    signals: list[Signal] = []
    checks = (
        (decision.liveness, "liveness_passed", "liveness_failed"),
        (decision.face_match, "face_match", "face_mismatch"),
        (decision.document_valid, None, "document_invalid"),
        (decision.statement_confirmed, "statement_confirmed", None),
    )
    for outcome, passed, failed in checks:
        name = passed if outcome is True else failed if outcome is False else None
        if name is not None:
            signals.append(Signal(name=name))
    if decision.status is VideoStatus.RESUBMISSION_REQUESTED:
        signals.append(Signal(name="resubmission_requested", detail=decision.reason))
    elif decision.status is VideoStatus.ABANDONED:
        signals.append(Signal(name="abandoned"))
    return signals


def _holder_outcome(holder: IdentityMatch) -> str:
    """``mismatch`` (a field differs), ``match`` (the name or ID number matched, nothing differs) or ``unknown``."""
    if holder.mismatched:
        return "mismatch"
    if MatchResult.MATCH in (holder.name, holder.national_id):
        return "match"
    return "unknown"


def _holder_signal(holder: IdentityMatch) -> Signal:
    outcome = _holder_outcome(holder)
    fields = {
        "mismatch": holder.mismatched,
        "match": holder.matched,
        "unknown": holder.checked,
    }[outcome]
    return Signal(name=f"document_holder_{outcome}", detail=",".join(fields))


def _holder_facts(holder: IdentityMatch) -> dict[str, str]:
    return {
        "document_holder": _holder_outcome(holder),
        "document_holder_name": holder.name.value,
        "document_holder_national_id": holder.national_id.value,
        "document_holder_date_of_birth": holder.date_of_birth.value,
    }


def _detail(decision: VideoDecision) -> str:
    text = f"{decision.provider} {decision.status.value.replace('_', ' ')}"
    if decision.reason_code or decision.reason:
        why = ": ".join(
            part for part in (decision.reason_code, decision.reason) if part
        )
        text += f" ({why})"
    return text


def _session_evidence(state: VideoSignState) -> Evidence:
    return Evidence(
        kind="video_session", reference=f"{state.provider}:{state.session_id}"
    )


def _statement_evidence(state: VideoSignState) -> Evidence:
    return Evidence(
        kind="statement", reference=state.statement_digest, detail=state.locale
    )


def _result(
    state: VideoSignState,
    decision: VideoDecision,
    *,
    detail: str | None = None,
    holder: IdentityMatch | None = None,
) -> ChannelResult:
    """The step's result for a vendor decision: total over every status.

    ``holder`` is how the ID document's holder matched the applicant, for
    an approval whose vendor reports the holder: a mismatch fails the step.
    """
    evidence = [
        _session_evidence(state),
        Evidence(
            kind="video_decision",
            reference=f"{state.provider}:{state.session_id}:"
            + (decision.attempt_id or decision.status.value),
            detail=" ".join(
                f"{name}={value}"
                for name, value in (
                    ("status", decision.status.value),
                    ("code", decision.code),
                    ("reason_code", decision.reason_code),
                )
                if value
            ),
        ),
        _statement_evidence(state),
        *(Evidence(kind="media", reference=reference) for reference in decision.media),
    ]
    score = (
        decision.face_match_score
        if decision.face_match_score is not None
        else decision.decision_score
    )
    status = _STATUS[decision.status]
    signals = _signals(decision)
    detail = detail or _detail(decision)
    facts: dict[str, Any] = {
        "vendor_session_id": state.session_id,
        "decision": decision.status.value,
        "code": decision.code,
        "reason_code": decision.reason_code,
        "liveness_score": decision.liveness_score,
        "face_match_score": decision.face_match_score,
        "statement_score": decision.statement_score,
        "resubmissions": len(state.resubmissions),
    }
    if holder is not None:
        signals.append(_holder_signal(holder))
        facts.update(_holder_facts(holder))
        if holder.mismatched:
            status = ResultStatus.FAILED
            detail += (
                "; the ID document's holder is not the applicant "
                f"({', '.join(holder.mismatched)} differ)"
            )
    return ChannelResult(
        status=status,
        signals=signals,
        score=score,
        evidence=evidence,
        provider=state.provider,
        detail=detail,
        facts=facts,
    )


def _bad_option(problem: str) -> ConfigurationError:
    return ConfigurationError(message=f"video_sign step options: {problem}")


@attrs.frozen(kw_only=True)
class _Settings:
    expires_in: float
    max_resubmissions: int
    locale: str | None


class VideoSignChannel:
    """Video signing over one or more [`VideoSignProvider`][multiverify.providers.VideoSignProvider]s.

    The challenge carries the vendor's link, its expiry and, as its message,
    the confirmation statement built from the loan (amount, term, fees; in
    zh-CN or en). A ``resubmission_requested`` decision keeps the attempt
    waiting on the same link, up to ``max_resubmissions`` times. The step's
    ``providers`` list picks the vendor per attempt, so a vendor failing to
    open a session fails over to the next one.

    Step ``options`` override the defaults per step: ``expires_in`` (a
    duration), ``max_resubmissions`` and ``locale``.

    Args:
        providers: the vendors, by their ``name``; the first is the default.
        expires_in: how long the link stays open, in seconds (capped by
            the vendor's own limit).
        poll_interval: seconds before the first poll of the vendor; each
            later poll waits twice as long as the one before.
        poll_max_interval: the longest gap between polls, in seconds.
        max_resubmissions: resubmissions allowed per attempt.
        locale: the statement's locale; the applicant's when ``None``.

    Raises:
        ConfigurationError: no providers, two with one name, or a setting
            out of range.

    Added in 0.1.
    """

    def __init__(
        self,
        providers: Iterable[VideoSignProvider],
        *,
        expires_in: float | timedelta = 1800.0,
        poll_interval: float | timedelta = 60.0,
        poll_max_interval: float | timedelta = 600.0,
        max_resubmissions: int = 3,
        locale: str | None = None,
    ) -> None:
        self._providers = by_name(providers, kind="video", channel="VideoSignChannel")
        self._default = _Settings(
            expires_in=_seconds(expires_in),
            max_resubmissions=max_resubmissions,
            locale=locale,
        )
        self._poll_first = _seconds(poll_interval)
        self._poll_max = _seconds(poll_max_interval)
        if (
            self._default.expires_in <= 0
            or self._poll_first <= 0
            or self._poll_max <= 0
        ):
            raise ConfigurationError(
                message="expires_in, poll_interval and poll_max_interval must be positive"
            )
        if max_resubmissions < 0:
            raise ConfigurationError(message="max_resubmissions must not be negative")

    def __repr__(self) -> str:
        return f"<multiverify.channels.VideoSignChannel({', '.join(self._providers)})>"

    @property
    def spec(self) -> ChannelSpec:
        """The built-in ``video_sign`` spec."""
        return BUILTIN_CHANNELS["video_sign"]

    @property
    def state_type(self) -> type[VideoSignState]:
        """[`VideoSignState`][multiverify.channels.VideoSignState]."""
        return VideoSignState

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers' names, the default first."""
        return tuple(self._providers)

    # -- the protocol ------------------------------------------------------------

    async def start(self, context: StepContext, /) -> StepOutcome:
        """Open a vendor session (or reuse the one this attempt already opened) and wait.

        Raises:
            ConfigurationError: the step names a provider this channel lacks,
                or its options are invalid.
            InvalidInputError: the statement's locale is unknown.
            ProviderError: the vendor could not open a session.
        """
        provider = self._provider(context.provider)
        settings = self._settings(context.options)
        now = context.clock.now()
        lifetime = min(settings.expires_in, provider.max_lifetime)
        statement = confirmation_statement(
            context.applicant.loan,
            locale=settings.locale or context.applicant.locale,
        )
        session = await self._recall(context, provider)
        if session is None:
            session = await provider.create_session(
                VideoSessionRequest(
                    reference=context.idempotency_key,
                    applicant_id=context.applicant.applicant_id,
                    name=context.applicant.name,
                    national_id=context.applicant.national_id,
                    statement=statement.text,
                    locale=statement.locale,
                    expires_at=now + timedelta(seconds=lifetime),
                )
            )
            await self._remember(context, provider, session)
        state = VideoSignState(
            provider=provider.name,
            session_id=session.session_id,
            url=session.url,
            expires_at=session.expires_at,
            statement=statement.text,
            statement_digest=statement.digest,
            locale=statement.locale,
            max_resubmissions=settings.max_resubmissions,
        )
        return self._waiting(context, state, now=now, first=True)

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        """Take a vendor decision or progress event, a poll timer or the expiry timer.

        Raises:
            InvalidInputError: a submission (the vendor, not the app, reports
                the result).
        """
        if not isinstance(state, VideoSignState):
            return Finished(
                result=ChannelResult(
                    status=ResultStatus.ERROR,
                    detail="the video step lost its state",
                )
            )
        now = context.clock.now()
        match message:
            case Submission():
                raise InvalidInputError(
                    message="a video_sign step takes no submissions: the vendor "
                    "reports its decision by webhook or is polled",
                    field="payload",
                )
            case ProviderEvent(kind="decision", data=data):
                try:
                    decision = VideoDecision.from_data(data)
                except ProviderResponseError as exc:
                    return self._error(
                        state,
                        context.applicant.redact(f"malformed decision event: {exc}"),
                    )
                return self._decide(context, state, decision, now=now)
            case ProviderEvent(kind="progress", data=data):
                action = data.get("action")
                if data.get("session_id") != state.session_id or not isinstance(
                    action, str
                ):
                    return Waiting(state=state)
                return Waiting(
                    state=attrs.evolve(state, progress=(*state.progress, action))
                )
            case TimerDue(name=name) if name == EXPIRY_TIMER:
                return await self._expire(context, state, now=now)
            case TimerDue(name=name) if name.startswith(_POLL):
                return await self._poll(context, state, now=now)
        return Waiting(state=state)

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        """Nothing to call: neither vendor revokes a link; it lapses at its expiry."""
        del context, state

    # -- decisions -----------------------------------------------------------------

    def _decide(
        self,
        context: StepContext,
        state: VideoSignState,
        decision: VideoDecision,
        *,
        now: datetime,
        polled: bool = False,
        final: bool = False,
    ) -> StepOutcome:
        if (
            decision.session_id != state.session_id
            or decision.provider != state.provider
        ):
            # Another session of this attempt (a retried create whose first
            # answer was lost): noted, never applied.
            stray = f"{decision.provider}:{decision.session_id}"
            if stray not in state.stray:
                state = attrs.evolve(state, stray=(*state.stray, stray))
            return self._waiting(context, state, now=now, poll=polled)
        if decision.status is not VideoStatus.RESUBMISSION_REQUESTED:
            holder = self._holder(context, state, decision)
            return Finished(result=_result(state, decision, holder=holder), state=state)
        key = decision.attempt_id or (
            decision.decided_at.isoformat() if decision.decided_at else "unnamed"
        )
        if key not in state.resubmissions:
            state = attrs.evolve(state, resubmissions=(*state.resubmissions, key))
        if final or len(state.resubmissions) > state.max_resubmissions:
            why = (
                "the link expired awaiting a resubmission"
                if final
                else f"resubmission limit of {state.max_resubmissions} reached"
            )
            return Finished(
                result=_result(state, decision, detail=f"{_detail(decision)}; {why}"),
                state=state,
            )
        return self._waiting(context, state, now=now, poll=polled)

    def _holder(
        self, context: StepContext, state: VideoSignState, decision: VideoDecision
    ) -> IdentityMatch | None:
        """How an approval's document holder matches the applicant; ``None`` when the vendor reports no holder."""
        if decision.status is not VideoStatus.APPROVED or decision.holder is None:
            return None
        key = getattr(self._providers.get(state.provider), "holder_key", None)
        if not isinstance(key, HolderKey):
            return IdentityMatch()  # nothing to digest the applicant with: unknown
        return compare_holder(decision.holder, context.applicant, key)

    async def _poll(
        self, context: StepContext, state: VideoSignState, *, now: datetime
    ) -> StepOutcome:
        if now >= state.expires_at:
            return Waiting(state=state)  # the expiry timer takes it from here
        provider = self._providers.get(state.provider)
        if provider is None:
            return self._error(state, f"provider {state.provider!r} is not wired")
        state = attrs.evolve(state, polls=state.polls + 1)
        try:
            decision = await provider.fetch_decision(state.session)
        except ProviderError as exc:
            if not exc.retryable:
                return self._error(
                    state, context.applicant.redact(f"{type(exc).__name__}: {exc}")
                )
            state = attrs.evolve(state, poll_errors=state.poll_errors + 1)
            return self._waiting(context, state, now=now, poll=True)
        if decision is None:
            return self._waiting(context, state, now=now, poll=True)
        return self._decide(context, state, decision, now=now, polled=True)

    async def _expire(
        self, context: StepContext, state: VideoSignState, *, now: datetime
    ) -> StepOutcome:
        provider = self._providers.get(state.provider)
        decision: VideoDecision | None = None
        looked = ""
        if provider is not None:
            try:
                decision = await provider.fetch_decision(state.session)
            except ProviderError as exc:
                looked = context.applicant.redact(
                    f"; the last look at the vendor failed: {exc}"
                )
        if decision is not None and decision.session_id == state.session_id:
            return self._decide(context, state, decision, now=now, final=True)
        signals = []
        if state.resubmissions:
            signals.append(Signal(name="resubmission_requested"))
        if "started" in state.progress:
            signals.append(Signal(name="abandoned"))
        return Finished(
            result=ChannelResult(
                status=ResultStatus.TIMEOUT,
                signals=signals,
                evidence=[_session_evidence(state), _statement_evidence(state)],
                provider=state.provider,
                detail=f"the video session expired at {state.expires_at.isoformat()} "
                f"without a decision{looked}",
                facts={
                    "vendor_session_id": state.session_id,
                    "resubmissions": len(state.resubmissions),
                },
            ),
            state=state,
        )

    # -- helpers -------------------------------------------------------------------

    def _waiting(
        self,
        context: StepContext,
        state: VideoSignState,
        *,
        now: datetime,
        first: bool = False,
        poll: bool = False,
    ) -> Waiting:
        timers: list[tuple[str, datetime]] = []
        if first:
            timers.append((EXPIRY_TIMER, state.expires_at))
        if first or poll:
            gap = min(self._poll_first * 2**state.polls, self._poll_max)
            due = now + timedelta(seconds=gap)
            if due < state.expires_at:
                timers.append((f"{_POLL}{state.polls + 1}", due))
        challenge = None
        if first:
            challenge = Challenge(
                step_id=context.step_id,
                kind="video_session",
                message=state.statement,
                url=state.url,
                expires_at=state.expires_at,
            )
        return Waiting(state=state, challenge=challenge, timers=tuple(timers))

    def _error(self, state: VideoSignState, detail: str) -> Finished:
        return Finished(
            result=ChannelResult(
                status=ResultStatus.ERROR,
                evidence=[_session_evidence(state)],
                provider=state.provider,
                detail=detail,
            ),
            state=state,
        )

    def _provider(self, name: str | None) -> VideoSignProvider:
        return step_provider(self._providers, name, kind="video")

    def _settings(self, options: Mapping[str, Any]) -> _Settings:
        settings = self._default
        if "expires_in" in options:
            try:
                seconds = parse_duration(options["expires_in"])
            except ValueError as exc:
                raise _bad_option(f"expires_in: {exc}") from None
            if seconds <= 0:
                raise _bad_option("expires_in must be positive")
            settings = attrs.evolve(settings, expires_in=seconds)
        if "max_resubmissions" in options:
            count = options["max_resubmissions"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise _bad_option(
                    f"max_resubmissions must be a whole number >= 0, got {count!r}"
                )
            settings = attrs.evolve(settings, max_resubmissions=count)
        if "locale" in options:
            locale = options["locale"]
            if not isinstance(locale, str) or not locale:
                raise _bad_option(f"locale must be a locale tag, got {locale!r}")
            settings = attrs.evolve(settings, locale=locale)
        return settings

    @staticmethod
    def _key(context: StepContext, provider: VideoSignProvider) -> str:
        return f"video_sign:{context.idempotency_key}:{provider.name}"

    async def _recall(
        self, context: StepContext, provider: VideoSignProvider
    ) -> VideoSession | None:
        """The session this attempt already opened at ``provider`` (a retried start), if any."""
        if context.shared is None:
            return None
        stored = await context.shared.get_value(
            self._key(context, provider), at=context.clock.now()
        )
        if stored is None:
            return None
        data = json.loads(stored)
        return VideoSession(
            provider=provider.name,
            session_id=data["session_id"],
            url=data["url"],
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )

    async def _remember(
        self,
        context: StepContext,
        provider: VideoSignProvider,
        session: VideoSession,
    ) -> None:
        if context.shared is None:
            return
        now = context.clock.now()
        await context.shared.put_value(
            self._key(context, provider),
            json.dumps(
                {
                    "session_id": session.session_id,
                    "url": session.url,
                    "expires_at": session.expires_at.isoformat(),
                }
            ),
            at=now,
            ttl=max((session.expires_at - now).total_seconds(), 1.0),
        )

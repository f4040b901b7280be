"""Test helpers for apps that embed multiverify: a fake clock, scripted channels, fake video and bureau vendors.

>>> clock = FakeClock()
>>> clock.now().isoformat()
'2026-01-01T09:00:00+00:00'
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ._results import Challenge, ChannelResult, ResultStatus, Signal
from ._specs import BUILTIN_CHANNELS, ChannelSpec
from .channels import (
    Finished,
    ProviderEvent,
    StepContext,
    StepMessage,
    StepOutcome,
    Submission,
    TimerDue,
    Waiting,
)
from .providers import (
    BureauReport,
    BureauRequest,
    FileStatus,
    IdentityMatch,
    InquiryCount,
    MatchResult,
    VideoDecision,
    VideoSession,
    VideoSessionRequest,
)

__all__ = [
    "FakeBureauProvider",
    "FakeClock",
    "FakeVideoProvider",
    "Scripted",
    "ScriptedChannel",
    "ScriptedState",
]


class FakeClock:
    """A clock that moves only when told to; ``sleep`` waits for [`advance`][multiverify.testing.FakeClock.advance].

    Args:
        start: the initial time (timezone-aware).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._tasks: dict[asyncio.Future[None], asyncio.Task[Any] | None] = {}
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"<multiverify.testing.FakeClock({self._now.isoformat()}, sleepers={len(self._sleepers)})>"

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float, /) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._sleepers,
            (self._now + timedelta(seconds=seconds), next(self._seq), future),
        )
        self._tasks[future] = asyncio.current_task()
        try:
            await future
        finally:
            self._tasks.pop(future, None)

    def sleeping_tasks(self) -> set[asyncio.Task[Any]]:
        """Tasks blocked in `sleep`, which only [`advance`][multiverify.testing.FakeClock.advance] wakes."""
        return {
            task
            for future, task in self._tasks.items()
            if task is not None and not future.done()
        }

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def advance(self, seconds: float | timedelta) -> None:
        """Move time forward, waking every sleeper due on the way, in order."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        target = self._now + timedelta(seconds=step)
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, due)
            if not future.done():
                future.set_result(None)
                for _ in range(5):
                    await asyncio.sleep(0)
        self._now = max(self._now, target)
        await asyncio.sleep(0)


@attrs.frozen(kw_only=True)
class ScriptedState:
    """The per-step state of a [`ScriptedChannel`][multiverify.testing.ScriptedChannel]: which scripted answer is live."""

    call: int


@attrs.frozen(kw_only=True)
class Scripted:
    """One scripted answer of a [`ScriptedChannel`][multiverify.testing.ScriptedChannel].

    Build them with the class methods: [`passes`][multiverify.testing.Scripted.passes], [`fails`][multiverify.testing.Scripted.fails],
    [`ends`][multiverify.testing.Scripted.ends], [`raises`][multiverify.testing.Scripted.raises] and [`waits`][multiverify.testing.Scripted.waits].
    """

    result: ChannelResult | None = None
    error: Exception | None = None
    delay: float = 0.0
    expect: Mapping[str, Any] | None = None
    otherwise: ChannelResult | None = None
    challenge: Challenge | None = None

    @classmethod
    def ends(
        cls,
        status: ResultStatus | str,
        *,
        signals: Iterable[str] = (),
        score: float | None = None,
        detail: str = "",
        facts: Mapping[str, Any] | None = None,
        delay: float = 0.0,
    ) -> Scripted:
        """Finish with a result of ``status`` after ``delay`` seconds (on the clock)."""
        return cls(
            result=ChannelResult(
                status=ResultStatus(status),
                signals=tuple(Signal(name=name) for name in signals),
                score=score,
                detail=detail,
                facts=dict(facts or {}),
            ),
            delay=delay,
        )

    @classmethod
    def passes(
        cls,
        *,
        signals: Iterable[str] = (),
        score: float | None = None,
        delay: float = 0.0,
    ) -> Scripted:
        """Finish ``passed``."""
        return cls.ends(ResultStatus.PASSED, signals=signals, score=score, delay=delay)

    @classmethod
    def fails(
        cls,
        *,
        signals: Iterable[str] = (),
        score: float | None = None,
        delay: float = 0.0,
    ) -> Scripted:
        """Finish ``failed``."""
        return cls.ends(ResultStatus.FAILED, signals=signals, score=score, delay=delay)

    @classmethod
    def raises(cls, error: Exception, *, delay: float = 0.0) -> Scripted:
        """Raise ``error`` from ``start`` (a ProviderError is retried when retryable)."""
        return cls(error=error, delay=delay)

    @classmethod
    def waits(
        cls,
        then: Scripted,
        *,
        expect: Mapping[str, Any] | None = None,
        otherwise: Scripted | None = None,
        kind: str = "input",
        message: str = "",
        destination: str | None = None,
        url: str | None = None,
    ) -> Scripted:
        """Wait for input, then finish with ``then``'s result.

        A [`Submission`][multiverify.channels.Submission] whose payload equals ``expect`` (any payload when
        ``expect`` is ``None``) or any [`ProviderEvent`][multiverify.channels.ProviderEvent] finishes the step;
        another payload finishes it with ``otherwise``, or keeps it waiting.
        """
        return cls(
            result=then.result,
            expect=dict(expect) if expect is not None else None,
            otherwise=otherwise.result if otherwise is not None else None,
            challenge=Challenge(
                step_id="", kind=kind, message=message, destination=destination, url=url
            ),
            delay=then.delay,
        )


ScriptSource = Sequence[Scripted] | Callable[[StepContext], Sequence[Scripted]]


class ScriptedChannel:
    """A channel that answers from a script: outcomes per call, errors, delays.

    Each ``start`` call takes the next scripted answer (the last one repeats),
    so ``[Scripted.raises(ProviderUnavailableError(...)), Scripted.passes()]``
    fails once and then passes: the retry path. ``script`` may also be a
    callable that picks the answers from the step context (the applicant,
    the provider, the options).

    Args:
        name: the channel name; a built-in name reuses its signals.
        script: the answers.
        spec: a full spec for a custom channel.

    Delays run on the clock of the step context (the verifier's clock).
    """

    def __init__(
        self,
        name: str,
        script: ScriptSource,
        *,
        spec: ChannelSpec | None = None,
    ) -> None:
        self._spec = spec or BUILTIN_CHANNELS.get(name) or ChannelSpec(name=name)
        self._script = script
        self.starts: list[StepContext] = []
        """Every ``start`` call, in order."""
        self.messages: list[tuple[StepContext, StepMessage]] = []
        """Every message handled, in order."""
        self.cancels: list[StepContext] = []
        """Every ``cancel`` call, in order."""

    def __repr__(self) -> str:
        return f"<multiverify.testing.ScriptedChannel({self._spec.name}, starts={len(self.starts)})>"

    @property
    def spec(self) -> ChannelSpec:
        return self._spec

    @property
    def state_type(self) -> type[ScriptedState]:
        return ScriptedState

    def _answers(self, context: StepContext) -> Sequence[Scripted]:
        answers = self._script(context) if callable(self._script) else self._script
        if not answers:
            msg = f"the script of {self._spec.name!r} has no answers"
            raise ValueError(msg)
        return answers

    async def start(self, context: StepContext, /) -> StepOutcome:
        call = len(self.starts)
        self.starts.append(context)
        answers = self._answers(context)
        answer = answers[min(call, len(answers) - 1)]
        if answer.delay:
            await context.clock.sleep(answer.delay)
        if answer.error is not None:
            raise answer.error
        state = ScriptedState(call=call)
        if answer.challenge is not None:
            return Waiting(
                state=state,
                challenge=attrs.evolve(answer.challenge, step_id=context.step_id),
            )
        if answer.result is None:
            msg = "a scripted answer needs a result, an error or a wait"
            raise ValueError(msg)
        return Finished(result=answer.result, state=state)

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        self.messages.append((context, message))
        answers = self._answers(context)
        call = state.call if isinstance(state, ScriptedState) else 0
        answer = answers[min(call, len(answers) - 1)]
        match message:
            case TimerDue():
                return Waiting(state=state)
            case Submission(payload=payload) if answer.expect is not None and dict(
                payload
            ) != dict(answer.expect):
                if answer.otherwise is not None:
                    return Finished(result=answer.otherwise, state=state)
                return Waiting(state=state)
            case Submission() | ProviderEvent():
                pass
        if answer.result is None:
            return Waiting(state=state)
        return Finished(result=answer.result, state=state)

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        del state
        self.cancels.append(context)


class FakeVideoProvider:
    """A [`VideoSignProvider`][multiverify.providers.VideoSignProvider] in memory, for channel tests.

    Sessions are numbered ``<name>-1``, ``<name>-2``...; [`decide`][multiverify.testing.FakeVideoProvider.decide]
    sets what [`fetch_decision`][multiverify.testing.FakeVideoProvider.fetch_decision]
    returns, and [`fail`][multiverify.testing.FakeVideoProvider.fail] makes
    the next calls raise.

    Args:
        name: the provider's name.
        max_lifetime: the longest session, in seconds.
    """

    def __init__(
        self, name: str = "fake-video", *, max_lifetime: float = 7200.0
    ) -> None:
        self._name = name
        self._max_lifetime = max_lifetime
        self.requests: list[VideoSessionRequest] = []
        """Every ``create_session`` request, in order."""
        self.fetches: list[str] = []
        """The session id of every ``fetch_decision`` call, in order."""
        self._decisions: dict[str, VideoDecision] = {}
        self._errors: list[Exception] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"<multiverify.testing.FakeVideoProvider({self._name}, sessions={len(self.requests)})>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_lifetime(self) -> float:
        return self._max_lifetime

    def session_id(self, number: int) -> str:
        """The id of the ``number``-th session created (from 1)."""
        return f"{self._name}-{number}"

    def decide(self, session_id: str, decision: VideoDecision | None) -> None:
        """What ``fetch_decision`` returns for the session from now on (``None``: no decision yet)."""
        if decision is None:
            self._decisions.pop(session_id, None)
        else:
            self._decisions[session_id] = decision

    def fail(self, *errors: Exception) -> None:
        """Raise these errors from the next calls, one per call, in order."""
        self._errors.extend(errors)

    async def create_session(self, request: VideoSessionRequest, /) -> VideoSession:
        if self._errors:
            raise self._errors.pop(0)
        self.requests.append(request)
        number = len(self.requests)
        return VideoSession(
            provider=self._name,
            session_id=self.session_id(number),
            url=f"https://video.fake.invalid/{self._name}/{number}",
            expires_at=request.expires_at,
        )

    async def fetch_decision(self, session: VideoSession, /) -> VideoDecision | None:
        self.fetches.append(session.session_id)
        if self._errors:
            raise self._errors.pop(0)
        return self._decisions.get(session.session_id)

    async def aclose(self) -> None:
        self.closed = True


def _clean_report(provider: str, number: int) -> BureauReport:
    return BureauReport(
        provider=provider,
        preset="fake",
        report_id=f"{provider}-report-{number}",
        file=FileStatus.HIT,
        identity=IdentityMatch(
            name=MatchResult.MATCH,
            national_id=MatchResult.MATCH,
            date_of_birth=MatchResult.MATCH,
            phone=MatchResult.MATCH,
        ),
        score=720,
        score_model="fake-score",
        score_range=(300, 850),
        inquiries=[InquiryCount(days=30, count=0), InquiryCount(days=90, count=1)],
    )


class FakeBureauProvider:
    """A [`BureauProvider`][multiverify.providers.BureauProvider] in memory, for channel and app tests.

    Each pull answers with the report set by [`respond`][multiverify.testing.FakeBureauProvider.respond]
    (by default a clean file: every identity element matched, score 720 of
    300-850), renamed to this provider and numbered ``<name>-report-<n>``;
    [`fail`][multiverify.testing.FakeBureauProvider.fail] makes the next
    pulls raise. ``requests`` records every pull.

    Args:
        name: the provider's name.
    """

    def __init__(self, name: str = "fake-bureau") -> None:
        self._name = name
        self._report: BureauReport | None = None
        self._errors: list[Exception] = []
        self.requests: list[BureauRequest] = []
        """Every pull that reached the provider, in order."""
        self.closed = False

    def __repr__(self) -> str:
        return f"<multiverify.testing.FakeBureauProvider({self._name}, pulls={len(self.requests)})>"

    @property
    def name(self) -> str:
        return self._name

    def respond(self, report: BureauReport | None) -> None:
        """Answer every later pull with ``report`` (``None``: the clean file again)."""
        self._report = report

    def fail(self, *errors: Exception) -> None:
        """Raise these errors from the next pulls, one per pull, in order."""
        self._errors.extend(errors)

    async def pull(self, request: BureauRequest, /) -> BureauReport:
        self.requests.append(request)
        if self._errors:
            raise self._errors.pop(0)
        number = len(self.requests)
        if self._report is None:
            return _clean_report(self._name, number)
        return attrs.evolve(
            self._report, provider=self._name, report_id=f"{self._name}-report-{number}"
        )

    async def aclose(self) -> None:
        self.closed = True

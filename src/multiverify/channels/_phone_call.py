"""The confirmation call: a scripted IVR over Twilio or Vonage, or a task for a human agent.

One step attempt may place several calls: after no answer, a busy line or an
answering machine the next call waits for the attempt schedule (``+30 min``,
``+2 h``, ``next day 10:00``...) as a durable channel timer, always inside
the applicant's local calling window. Each placement is guarded so that a
retried or resumed start never rings the applicant twice: a marker in the
store's shared state names the call once placed, and an uncertain outcome is
reconciled by looking the call up at the vendor.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import attrs

from .._call_script import (
    MISMATCH_SIGNALS,
    Answer,
    AnswerKind,
    CallScript,
    MismatchAction,
    PhoneCallOptions,
    Prompt,
    PromptKind,
    digits_valid,
    expected_digits,
    normalize_digits,
    phone_options,
    render,
    speech_keywords,
    yes_no,
)
from .._masking import mask_id, mask_name, mask_phone
from .._results import Challenge, ChannelResult, Evidence, ResultStatus, Signal
from .._specs import BUILTIN_CHANNELS, ChannelSpec
from ..compliance import CallingWindow, calling_zones
from ..exceptions import (
    ConfigurationError,
    InvalidInputError,
    ProviderError,
)
from ..providers import (
    AgentDeskProvider,
    AnsweredBy,
    CallInfo,
    CallRequest,
    CallRoute,
    CallStatus,
    Gather,
    VoiceInstruction,
    VoiceProvider,
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
from ._call_analysis import CallAnalyzer, RuleBasedAnalyzer, SpeechAnswer

__all__ = [
    "AGENT_DISPOSITIONS",
    "AGENT_FLAGS",
    "CallAttempt",
    "PhoneCallChannel",
    "PhoneCallState",
]

#: What an agent may report a call ended with.
AGENT_DISPOSITIONS = frozenset(
    {"confirmed", "declined", "wrong_person", "no_answer", "call_back_later"}
)
#: Risk flags an agent may raise, and the signal each becomes.
AGENT_FLAGS: Mapping[str, str] = {
    "third_party_present": "third_party_present",
    "coached": "coached",
    "evasive": "evasive_answer",
    "inconsistent": "inconsistent",
}
#: How far a live call has come; a late callback never moves it back.
_PROGRESS = {CallStatus.QUEUED: 0, CallStatus.RINGING: 1, CallStatus.IN_PROGRESS: 2}
_MARKER_TTL = 3 * 24 * 3600.0
_RECONCILE_WINDOW = timedelta(minutes=15)
_WATCHDOG_SLACK = 120.0
#: Signals that leave an otherwise confirmed call inconclusive.
_MISMATCH_SIGNALS = (MISMATCH_SIGNALS - {"call_back_later"}) | {"invalid_input"}


@attrs.frozen(kw_only=True)
class CallAttempt:
    """One call placed (or one agent task queued) within a step attempt.

    Attributes:
        number: its number within the step attempt, from 1.
        provider: the vendor that placed it.
        call_id: the vendor's id (or the agent task's id).
        placed_at: when it was placed.
        status: its last known progress.
        answered_by: answering-machine detection's finding.
        ended: the channel has decided about it; later callbacks change nothing.
    """

    number: int
    provider: str
    call_id: str
    placed_at: datetime
    status: CallStatus = CallStatus.QUEUED
    answered_by: AnsweredBy | None = None
    ended: bool = False


@attrs.frozen(kw_only=True)
class PhoneCallState:
    """The per-step state of [`PhoneCallChannel`][multiverify.channels.PhoneCallChannel].

    ``instruction`` is what the call does next: the voice webhooks read it
    from the saved session to answer the vendor with TwiML or NCCO. A
    recorded call whose script has ended waits (``awaiting_recording``) for
    the vendor's recording reference, which comes once the call is over,
    so that the result's evidence names it; ``failed_prompt`` and
    ``hung_up`` keep how the script ended meanwhile.
    """

    mode: str = "ivr"
    locale: str = "zh-CN"
    zones: tuple[str, ...] = ()
    calls: tuple[CallAttempt, ...] = ()
    next_call: int = 1
    scheduled_at: datetime | None = None
    live: bool = False
    prompt: int = 0
    tries: int = 0
    heard: bool = False
    turn: int = 0
    asked_at: datetime | None = None
    answers: tuple[Answer, ...] = ()
    signals: tuple[str, ...] = ()
    instruction: VoiceInstruction | None = None
    failed_providers: tuple[str, ...] = ()
    recordings: tuple[str, ...] = ()
    recorded_calls: tuple[int, ...] = ()
    awaiting_recording: bool = False
    failed_prompt: str | None = None
    hung_up: bool = False
    notes: str = attrs.field(default="", repr=False)

    @property
    def current(self) -> CallAttempt | None:
        """The latest call, if one was placed."""
        return self.calls[-1] if self.calls else None


def _add(signals: Sequence[str], *names: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*signals, *names)))


def _replace_current(state: PhoneCallState, **changes: Any) -> PhoneCallState:
    current = state.calls[-1]
    return attrs.evolve(
        state, calls=(*state.calls[:-1], attrs.evolve(current, **changes))
    )


class PhoneCallChannel:
    """The ``phone_call`` channel: confirm identity, intent and details on a call.

    The step's ``options`` configure it (see the phone-call guide): the call
    ``script`` (or the built-in one), ``calling_window``, ``retry_schedule``,
    ``max_attempts``, ``max_per_day``, ``zone``, ``ring_timeout``,
    ``time_limit``, ``machine_detection``, ``recording`` and ``language``.
    The step's ``providers`` pick the vendor by name; when a placed call
    fails at one vendor, the next configured one is tried.

    Args:
        providers: the voice vendors and agent desks, by their names.
        analyzer: judges spoken answers (a rule-based one by default).
        default_provider: used when the step names no provider (the first
            of ``providers`` by default).
    """

    state_type: ClassVar[type[PhoneCallState]] = PhoneCallState

    def __init__(
        self,
        providers: Iterable[VoiceProvider | AgentDeskProvider],
        *,
        analyzer: CallAnalyzer | None = None,
        default_provider: str | None = None,
    ) -> None:
        self._providers: dict[str, VoiceProvider | AgentDeskProvider] = {}
        for provider in providers:
            if provider.name in self._providers:
                raise ConfigurationError(
                    message=f"two phone-call providers are named {provider.name!r}"
                )
            self._providers[provider.name] = provider
        if not self._providers:
            raise ConfigurationError(message="PhoneCallChannel needs a provider")
        self._default = default_provider or next(iter(self._providers))
        if self._default not in self._providers:
            raise ConfigurationError(
                message=f"no phone-call provider named {self._default!r}"
            )
        self._analyzer: CallAnalyzer = analyzer or RuleBasedAnalyzer()
        self._options: dict[str, PhoneCallOptions] = {}

    def __repr__(self) -> str:
        return f"<multiverify.channels.PhoneCallChannel({', '.join(self._providers)})>"

    @property
    def spec(self) -> ChannelSpec:
        """The built-in ``phone_call`` spec."""
        return BUILTIN_CHANNELS["phone_call"]

    @property
    def providers(self) -> Mapping[str, VoiceProvider | AgentDeskProvider]:
        """The configured providers by name."""
        return dict(self._providers)

    # -- options and helpers ------------------------------------------------------

    def options(self, context: StepContext) -> PhoneCallOptions:
        """The step's options, read once per distinct value."""
        key = json.dumps(context.options, sort_keys=True, default=str)
        cached = self._options.get(key)
        if cached is None:
            cached = self._options[key] = phone_options(context.options)
        return cached

    def _provider(self, name: str | None) -> VoiceProvider | AgentDeskProvider:
        chosen = name or self._default
        try:
            return self._providers[chosen]
        except KeyError:
            raise ConfigurationError(
                message=f"the phone_call channel has no provider {chosen!r} "
                f"(has: {', '.join(self._providers)})"
            ) from None

    def _voice(self, name: str) -> VoiceProvider:
        provider = self._provider(name)
        if isinstance(provider, AgentDeskProvider):
            raise ConfigurationError(
                message=f"{name!r} is an agent desk, not a voice vendor"
            )
        return provider

    @staticmethod
    def _zones(state: PhoneCallState) -> tuple[ZoneInfo, ...]:
        return tuple(ZoneInfo(name) for name in state.zones)

    @staticmethod
    def _challenge(context: StepContext, message: str) -> Challenge:
        return Challenge(
            step_id=context.step_id,
            kind="call",
            message=message,
            destination=mask_phone(context.applicant.phone),
        )

    def _result(
        self,
        context: StepContext,
        state: PhoneCallState,
        status: ResultStatus,
        signals: Iterable[str],
        *,
        detail: str,
        score: float | None = None,
    ) -> ChannelResult:
        evidence = [
            Evidence(
                kind="call" if call.provider != "agent_desk" else "agent_task",
                reference=call.call_id,
                detail=f"call {call.number} via {call.provider}: {call.status.value}"
                + (
                    f", answered by {call.answered_by.value}"
                    if call.answered_by
                    else ""
                ),
            )
            for call in state.calls
        ]
        evidence += [
            Evidence(kind="recording", reference=ref, detail="call recording")
            for ref in state.recordings
        ]
        if state.notes:
            evidence.append(
                Evidence(
                    kind="agent_notes",
                    reference=context.idempotency_key,
                    detail=f"{len(state.notes)} characters, kept with the step's state",
                )
            )
        current = state.current
        return ChannelResult(
            status=status,
            signals=[Signal(name=name) for name in dict.fromkeys(signals)],
            score=score,
            evidence=evidence,
            provider=current.provider if current else None,
            detail=detail,
            facts={
                "calls": len(state.calls),
                "prompts_answered": len(state.answers),
                "locale": state.locale,
                "mode": state.mode,
            },
        )

    # -- the Channel protocol -------------------------------------------------------

    async def start(self, context: StepContext, /) -> StepOutcome:
        """Place the first call now, or at the calling window's next opening."""
        options = self.options(context)
        applicant = context.applicant
        zones = calling_zones(
            applicant.timezone if options.zone == "applicant" else None,
            applicant.phone,
        )
        locale = options.script.locale_for(options.language or applicant.locale)
        state = PhoneCallState(
            locale=locale, zones=tuple(str(zone.key) for zone in zones)
        )
        provider = self._provider(context.provider)
        if isinstance(provider, AgentDeskProvider):
            state = attrs.evolve(state, mode="agent")
            return await self._queue_task(context, options, state, provider, 1)
        return await self._dial(context, options, state, 1, provider.name)

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        """Take a callback, a timer or (in agent mode) an agent's outcome."""
        if not isinstance(state, PhoneCallState):
            raise InvalidInputError(
                message="phone_call step has no call state", field="state"
            )
        options = self.options(context)
        match message:
            case TimerDue(name=name):
                return await self._timer(context, options, state, name)
            case Submission(payload=payload):
                if state.mode != "agent":
                    raise InvalidInputError(
                        message="this call runs on a voice platform; its answers "
                        "arrive as callbacks, not submissions",
                        field="payload",
                    )
                return await self._agent_outcome(context, options, state, payload)
            case ProviderEvent(data=data):
                return await self._event(context, options, state, data)
        raise InvalidInputError(
            message="unknown message", field="message"
        )  # pragma: no cover

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        """Hang up a call (saying the script's ``ending`` if it is live), or withdraw an agent task."""
        if not isinstance(state, PhoneCallState) or state.current is None:
            return
        current = state.current
        if current.ended and state.mode != "agent":
            return
        provider = self._provider(current.provider)
        if isinstance(provider, AgentDeskProvider):
            await provider.remove(current.call_id)
        elif not current.status.final:
            goodbye = None
            if state.live:
                script = self.options(context).script
                goodbye = VoiceInstruction(
                    turn=state.turn + 1,
                    language=state.locale,
                    say=[_text(script.ending, state.locale, script)],
                    hangup=True,
                )
            await provider.hang_up(current.call_id, goodbye=goodbye)

    # -- placing calls -------------------------------------------------------------

    async def _dial(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        number: int,
        vendor: str,
    ) -> StepOutcome:
        """Place call ``number`` now if the window allows, else schedule it."""
        now = context.clock.now()
        zones = self._zones(state)
        window = options.calling_window
        if not window.allows(now, zones):
            opening = window.next_opening(now, zones)
            if opening is None:
                return self._never_callable(context, options, state)
            state = attrs.evolve(state, next_call=number, scheduled_at=opening)
            local = opening.astimezone(zones[0])
            return Waiting(
                state=state,
                challenge=self._challenge(
                    context, f"we will call you at {local:%Y-%m-%d %H:%M} your time"
                ),
                timers=((f"dial-{number}", opening),),
            )
        info = await self._place(context, options, number, vendor)
        attempt = CallAttempt(
            number=number,
            provider=info.provider,
            call_id=info.call_id,
            placed_at=now,
            status=info.status,
        )
        state = attrs.evolve(
            state,
            calls=(*state.calls, attempt),
            next_call=number + 1,
            scheduled_at=None,
            live=False,
            prompt=0,
            tries=0,
            heard=False,
            instruction=None,
        )
        check = now + timedelta(
            seconds=options.ring_timeout + options.time_limit + _WATCHDOG_SLACK
        )
        return Waiting(
            state=state,
            challenge=self._challenge(context, "we are calling you now"),
            timers=((f"check-{number}", check),),
        )

    def _never_callable(
        self, context: StepContext, options: PhoneCallOptions, state: PhoneCallState
    ) -> Finished:
        """The calling window does not open again within the horizon: no contact."""
        return Finished(
            result=self._result(
                context,
                state,
                ResultStatus.FAILED,
                [*state.signals, "outside_calling_window", "no_contact"],
                detail=f"no calling time ({options.calling_window.describe()}) "
                "within a year",
            ),
            state=state,
        )

    async def _place(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        number: int,
        vendor: str,
    ) -> CallInfo:
        """Place one call exactly once, however often this runs for the same key."""
        provider = self._voice(vendor)
        now = context.clock.now()
        to = context.applicant.phone
        shared = context.shared
        marker = f"multiverify:phone-call:{context.idempotency_key}:{number}"
        if shared is not None and not await shared.put_value(
            marker, "placing", at=now, ttl=_MARKER_TTL, only_if_absent=True
        ):
            prior = await shared.get_value(marker, at=now) or ""
            if prior.startswith("placed:"):
                _, name, call_id = prior.split(":", 2)
                return CallInfo(
                    call_id=call_id, status=CallStatus.QUEUED, provider=name
                )
            # An earlier try stopped between sending and recording: look first.
            found = await provider.find_calls(to=to, since=now - _RECONCILE_WINDOW)
            if found:
                await shared.put_value(
                    marker,
                    f"placed:{found[0].provider}:{found[0].call_id}",
                    at=now,
                    ttl=_MARKER_TTL,
                )
                return found[0]
        request = CallRequest(
            to=to,
            route=CallRoute(
                session_id=context.session_id,
                step_id=context.step_id,
                attempt=context.attempt,
                call=number,
            ),
            ring_timeout=options.ring_timeout,
            time_limit=options.time_limit,
            machine_detection=options.machine_detection,
            record=options.script.recording,
        )
        try:
            info = await provider.place_call(request)
        except ProviderError as exc:
            found = []
            if exc.uncertain:  # the vendor may have placed it: look before failing
                try:
                    found = await provider.find_calls(
                        to=to, since=now - _RECONCILE_WINDOW
                    )
                except ProviderError:
                    found = []
            if not found:
                if shared is not None:
                    await shared.delete_value(marker, value="placing")
                raise
            info = found[0]
        if shared is not None:
            await shared.put_value(
                marker,
                f"placed:{info.provider}:{info.call_id}",
                at=now,
                ttl=_MARKER_TTL,
            )
        return info

    def _other_vendor(
        self, context: StepContext, state: PhoneCallState, failed: str
    ) -> str | None:
        """The next voice vendor to try: the step's providers in order, else ours."""
        tried = {*state.failed_providers, failed}
        for name in context.providers or tuple(self._providers):
            provider = self._providers.get(name)
            if (
                name not in tried
                and provider is not None
                and not isinstance(provider, AgentDeskProvider)
            ):
                return name
        return None

    async def _redial_elsewhere(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        failed: str,
        detail: str,
    ) -> StepOutcome:
        """A vendor could not carry the call: try the next one, else end with an error."""
        state = attrs.evolve(
            state, failed_providers=_add(state.failed_providers, failed)
        )
        while (vendor := self._other_vendor(context, state, failed)) is not None:
            try:
                return await self._dial(
                    context, options, state, state.next_call, vendor
                )
            except ProviderError as exc:
                state = attrs.evolve(
                    state, failed_providers=_add(state.failed_providers, vendor)
                )
                detail = f"{detail}; {vendor}: {context.applicant.redact(str(exc))}"
        return Finished(
            result=self._result(
                context, state, ResultStatus.ERROR, state.signals, detail=detail
            ),
            state=state,
        )

    async def _no_contact(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        reason: str,
    ) -> StepOutcome:
        """The call did not reach the applicant: schedule the next one, or give up."""
        state = attrs.evolve(
            _replace_current(state, ended=True) if state.calls else state,
            signals=_add(state.signals, reason),
            live=False,
            instruction=None,
        )
        placed = [call.placed_at for call in state.calls]
        zones = self._zones(state)
        due = options.schedule.next_attempt(
            placed, window=options.calling_window, zones=zones
        )
        if due is None:
            return Finished(
                result=self._result(
                    context,
                    state,
                    ResultStatus.FAILED,
                    [*state.signals, "no_contact"],
                    detail=f"no contact after {len(placed)} "
                    + ("call" if len(placed) == 1 else "calls"),
                ),
                state=state,
            )
        state = attrs.evolve(state, scheduled_at=due)
        local = due.astimezone(zones[0])
        if state.mode == "agent":
            provider = self._provider(state.current.provider if state.current else None)
            assert isinstance(provider, AgentDeskProvider)  # noqa: S101 - agent mode
            return await self._queue_task(
                context, options, state, provider, state.next_call, available_at=due
            )
        return Waiting(
            state=state,
            challenge=self._challenge(
                context, f"we will call you again at {local:%Y-%m-%d %H:%M} your time"
            ),
            timers=((f"dial-{state.next_call}", due),),
        )

    # -- timers and callbacks -------------------------------------------------------

    async def _timer(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        name: str,
    ) -> StepOutcome:
        kind, _, text = name.partition("-")
        number = int(text) if text.isdigit() else -1
        if (
            kind == "dial"
            and number == state.next_call
            and (state.current is None or state.current.number < number)
        ):
            vendor = (
                state.current.provider
                if state.current is not None
                else context.provider
            ) or self._default
            try:
                return await self._dial(context, options, state, number, vendor)
            except ProviderError as exc:
                return await self._redial_elsewhere(
                    context,
                    options,
                    state,
                    vendor,
                    f"{vendor}: {context.applicant.redact(str(exc))}",
                )
        current = state.current
        if (
            kind == "check"
            and current is not None
            and current.number == number
            and not current.ended
        ):
            return await self._watchdog(context, options, state)
        if (
            kind == "recording"
            and state.awaiting_recording
            and current is not None
            and current.number == number
        ):
            # No reference came in time: the result says so in its evidence.
            return self._close(context, options, state)
        return Waiting(state=state)

    async def _watchdog(
        self, context: StepContext, options: PhoneCallOptions, state: PhoneCallState
    ) -> StepOutcome:
        """No final callback came in time: ask the vendor how the call ended."""
        current = state.current
        assert current is not None  # noqa: S101 - checked by the caller
        later = context.clock.now() + timedelta(seconds=options.time_limit / 2 + 60)
        try:
            info = await self._voice(current.provider).get_call(current.call_id)
        except ProviderError:
            return Waiting(state=state, timers=((f"check-{current.number}", later),))
        if not info.status.final:
            return Waiting(state=state, timers=((f"check-{current.number}", later),))
        return await self._status(
            context, options, state, info.status, info.answered_by
        )

    async def _event(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        data: Mapping[str, Any],
    ) -> StepOutcome:
        current = state.current
        event = data.get("event")
        if event == "recording":
            # It comes once a call is over, for any call of this attempt.
            state = _with_recording(state, data)
            if (
                state.awaiting_recording
                and current is not None
                and data.get("call") == current.number
            ):
                return self._close(context, options, state)
            return Waiting(state=state)
        if current is None or data.get("call") != current.number or current.ended:
            return Waiting(state=state)  # an old call's late news
        if data.get("call_id") and data.get("call_id") != current.call_id:
            state = _replace_current(state, call_id=str(data["call_id"]))
        if event == "status":
            return await self._status(
                context,
                options,
                state,
                CallStatus(str(data.get("status", "failed"))),
                AnsweredBy(data["answered_by"]) if data.get("answered_by") else None,
            )
        if event == "amd":
            found = AnsweredBy(str(data.get("answered_by", "unknown")))
            state = _replace_current(state, answered_by=found)
            if found is AnsweredBy.MACHINE:
                with contextlib.suppress(ProviderError):  # our next answer hangs up too
                    await self._voice(current.provider).hang_up(current.call_id)
                return await self._no_contact(
                    context, options, state, "answering_machine"
                )
            return Waiting(state=state)
        if event in ("answer", "resume"):
            if state.live:
                return Waiting(state=state)
            if data.get("answered_by") == AnsweredBy.MACHINE.value:
                return await self._no_contact(
                    context, options, state, "answering_machine"
                )
            state = attrs.evolve(
                _replace_current(state, status=CallStatus.IN_PROGRESS),
                live=True,
                prompt=0,
                tries=0,
                answers=(),  # the script starts afresh on each answered call
            )
            return self._ask(context, options, state, record=options.script.recording)
        if event == "gather":
            if not state.live or data.get("turn") != state.turn:
                return Waiting(state=state)  # a repeated or late answer
            return await self._answer(context, options, state, data)
        return Waiting(state=state)

    async def _status(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        status: CallStatus,
        found: AnsweredBy | None,
    ) -> StepOutcome:
        current = state.current
        assert current is not None  # noqa: S101 - checked by the caller
        if not status.final and _PROGRESS[status] < _PROGRESS.get(current.status, 3):
            status = current.status  # an earlier callback delivered late
        state = _replace_current(
            state, status=status, answered_by=found or current.answered_by
        )
        if not status.final:
            return Waiting(state=state)
        if status is CallStatus.FAILED:
            return await self._redial_elsewhere(
                context,
                options,
                _replace_current(state, ended=True),
                current.provider,
                f"the call failed at {current.provider}",
            )
        if state.live:
            # Hung up before the script ended.
            state = _replace_current(attrs.evolve(state, live=False), ended=True)
            return self._finish(context, options, state, hung_up=True)
        if (found or current.answered_by) is AnsweredBy.MACHINE:
            return await self._no_contact(context, options, state, "answering_machine")
        reason = "busy" if status is CallStatus.BUSY else "no_answer"
        return await self._no_contact(context, options, state, reason)

    # -- the script ------------------------------------------------------------------

    def _ask(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        *,
        prefix: Sequence[str] = (),
        record: bool = False,
    ) -> StepOutcome:
        """Speak the current prompt (and any statements before it) and wait for its answer."""
        script = options.script
        said = list(prefix)
        index = state.prompt
        while index < len(script.prompts):
            prompt = script.prompts[index]
            said.append(render(script, prompt, context.applicant, state.locale))
            if prompt.expect.kind is not AnswerKind.NONE:
                break
            state = attrs.evolve(
                state,
                answers=(*state.answers, Answer(prompt_id=prompt.id, matched=None)),
            )
            index += 1
        if index >= len(script.prompts):
            state = attrs.evolve(state, prompt=index)
            return self._finish(context, options, state, said=said)
        prompt = script.prompts[index]
        turn = state.turn + 1
        instruction = VoiceInstruction(
            turn=turn,
            language=state.locale,
            say=said,
            gather=_gather(prompt, context, state.locale),
            record=record,
        )
        state = attrs.evolve(
            state,
            prompt=index,
            turn=turn,
            asked_at=context.clock.now(),
            instruction=instruction,
        )
        return Waiting(
            state=state, challenge=self._challenge(context, "call in progress")
        )

    async def _answer(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        data: Mapping[str, Any],
    ) -> StepOutcome:
        script = options.script
        prompt = script.prompts[state.prompt]
        now = context.clock.now()
        elapsed = (now - state.asked_at).total_seconds() if state.asked_at else None
        digits = str(data.get("digits") or "")
        speech = str(data.get("speech") or "")
        matched, confidence, heard_signals = await self._judge(
            context, prompt, state.locale, digits, speech, data.get("confidence")
        )
        heard = bool(digits or speech)
        if matched is None:
            tries = state.tries + 1
            state = attrs.evolve(state, tries=tries, heard=state.heard or heard)
            if tries <= prompt.reprompts:
                return self._ask(
                    context,
                    options,
                    state,
                    prefix=[_text(script.retry_text, state.locale, script)],
                )
            # Out of re-prompts: the prompt counts as answered wrongly.
            reason = "invalid_input" if state.heard else "evasive_answer"
            heard_signals = (*heard_signals, reason)
            matched = False
        hesitant = (
            prompt.hesitation is not None
            and elapsed is not None
            and elapsed > prompt.hesitation
        )
        signals = list(heard_signals)
        if hesitant:
            signals.append("hesitant")
        if matched is False:
            signals.append(prompt.mismatch_signal)
        answer = Answer(
            prompt_id=prompt.id,
            matched=matched,
            invalid=state.tries,
            response_time=elapsed,
            hesitant=hesitant,
            confidence=confidence,
            signals=tuple(dict.fromkeys(signals)),
        )
        state = attrs.evolve(
            state,
            answers=(*state.answers, answer),
            signals=_add(state.signals, *signals),
            prompt=state.prompt + 1,
            tries=0,
            heard=False,
        )
        if matched is False and prompt.mismatch_action is MismatchAction.FAIL:
            return self._finish(
                context,
                options,
                state,
                said=[_text(script.ending, state.locale, script)],
                failed=prompt,
            )
        if matched is False and prompt.mismatch_action is MismatchAction.CALL_BACK:
            return await self._call_back(context, options, state)
        return self._ask(context, options, state)

    async def _call_back(
        self, context: StepContext, options: PhoneCallOptions, state: PhoneCallState
    ) -> StepOutcome:
        """Not now, says the callee: say goodbye, hang up, and call again per the schedule."""
        script = options.script
        goodbye = VoiceInstruction(
            turn=state.turn + 1,
            language=state.locale,
            say=[_text(script.call_back, state.locale, script)],
            hangup=True,
        )
        outcome = await self._no_contact(context, options, state, "call_back_later")
        return attrs.evolve(
            outcome,
            state=attrs.evolve(outcome.state, instruction=goodbye, turn=goodbye.turn),
        )

    async def _judge(  # noqa: PLR0917 - private, called twice
        self,
        context: StepContext,
        prompt: Prompt,
        locale: str,
        digits: str,
        speech: str,
        confidence: object,
    ) -> tuple[bool | None, float | None, tuple[str, ...]]:
        """Whether an answer matches (``None``: malformed or missing), its confidence, its signals."""
        expect = prompt.expect
        applicant = context.applicant
        if expect.kind is AnswerKind.DIGITS and not speech:
            if not digits_valid(digits, expect):
                return None, None, ()
            if expect.source is None:
                return True, None, ()
            wanted = expected_digits(expect.source, applicant)
            return normalize_digits(digits, expect.source).upper() == wanted, None, ()
        if expect.kind is AnswerKind.YES_NO and not speech:
            said = yes_no(digits, expect)
            return (None if said is None else said == expect.answer), None, ()
        if speech:
            analysis = await self._analyzer.analyze(
                SpeechAnswer(
                    prompt_id=prompt.id,
                    prompt_kind=prompt.kind.value,
                    transcript=speech,
                    locale=locale,
                    keywords=speech_keywords(prompt, applicant, locale),
                    expected=expect.answer
                    if expect.kind is AnswerKind.YES_NO
                    else None,
                    recognizer_confidence=float(confidence)
                    if isinstance(confidence, int | float)
                    else None,
                )
            )
            return analysis.matched, analysis.confidence, analysis.signals
        return None, None, ()

    def _finish(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        *,
        said: Sequence[str] = (),
        failed: Prompt | None = None,
        hung_up: bool = False,
    ) -> StepOutcome:
        """End the script: say goodbye, hang up, and turn the answers into a result.

        A recorded call first waits for its recording reference (or for
        ``recording_wait`` to pass), so that the result's evidence names it.
        """
        script = options.script
        if not hung_up and failed is None:
            said = [*said, _text(script.closing, state.locale, script)]
        state = attrs.evolve(
            state,
            instruction=VoiceInstruction(
                turn=state.turn + 1, language=state.locale, say=said, hangup=True
            ),
            turn=state.turn + 1,
            calls=(*state.calls[:-1], attrs.evolve(state.calls[-1], ended=True))
            if state.calls
            else (),
            failed_prompt=failed.id if failed is not None else None,
            hung_up=hung_up,
        )
        if (
            script.recording
            and state.calls
            and (state.calls[-1].number not in state.recorded_calls)
        ):
            due = context.clock.now() + timedelta(seconds=options.recording_wait)
            return Waiting(
                state=attrs.evolve(state, awaiting_recording=True),
                challenge=self._challenge(context, "the call has ended"),
                timers=((f"recording-{state.calls[-1].number}", due),),
            )
        return self._close(context, options, state)

    def _close(
        self, context: StepContext, options: PhoneCallOptions, state: PhoneCallState
    ) -> Finished:
        """The result of a script that has ended, as ``_finish`` left it."""
        script = options.script
        failed = (
            script.prompt(state.failed_prompt)
            if state.failed_prompt is not None
            else None
        )
        state = attrs.evolve(state, awaiting_recording=False)
        result = _script_result(
            self, context, script, state, failed, hung_up=state.hung_up
        )
        if script.recording:
            missing = bool(state.calls) and (
                state.calls[-1].number not in state.recorded_calls
            )
            result = attrs.evolve(
                result,
                detail=result.detail
                + ("; the vendor sent no recording reference" if missing else ""),
                facts={**result.facts, "recorded": not missing},
            )
        return Finished(result=result, state=state)

    # -- agent desk ------------------------------------------------------------------

    async def _queue_task(
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        provider: AgentDeskProvider,
        number: int,
        *,
        available_at: datetime | None = None,
    ) -> StepOutcome:
        now = context.clock.now()
        zones = self._zones(state)
        opening = options.calling_window.next_opening(available_at or now, zones)
        if opening is None:
            return self._never_callable(context, options, state)
        task_id = f"{context.idempotency_key}:{number}"
        body = agent_task_body(context, options, state, task_id, number, opening)
        await provider.enqueue(task_id, body, at=now, available_at=opening)
        state = attrs.evolve(
            state,
            calls=(
                *state.calls,
                CallAttempt(
                    number=number,
                    provider=provider.name,
                    call_id=task_id,
                    placed_at=opening,
                ),
            ),
            next_call=number + 1,
            scheduled_at=opening,
        )
        return Waiting(
            state=state,
            challenge=self._challenge(context, "a call-centre agent will call you"),
        )

    async def _check_claim(
        self, context: StepContext, current: CallAttempt, payload: Mapping[str, Any]
    ) -> None:
        """Refuse an outcome unless an agent holds the task's claim now.

        The step takes submissions, and so does whatever route hands the
        applicant's own input to a session: without this an applicant could
        report their own confirmation call as answered.
        """
        provider = self._provider(current.provider)
        assert isinstance(provider, AgentDeskProvider)  # noqa: S101 - agent mode
        agent = payload.get("agent")
        items = await provider.queue.queue_items(provider.queue_name)
        item = next((i for i in items if i.item_id == current.call_id), None)
        if (
            payload.get("task") != current.call_id
            or not isinstance(agent, str)
            or item is None
            or item.claimed_by != agent
            or not item.claimed(context.clock.now())
        ):
            raise InvalidInputError(
                message="an agent outcome needs the step's current task, claimed "
                "by the agent who reports it",
                field="task",
            )

    async def _agent_outcome(  # noqa: PLR0915 - one validation pass, then the dispositions
        self,
        context: StepContext,
        options: PhoneCallOptions,
        state: PhoneCallState,
        payload: Mapping[str, Any],
    ) -> StepOutcome:
        current = state.current
        assert current is not None  # noqa: S101 - agent mode always has a task
        task = payload.get("task")
        if task is not None and task != current.call_id:
            raise InvalidInputError(
                message=f"task {task!r} is not this step's current task", field="task"
            )
        disposition = payload.get("disposition")
        if disposition not in AGENT_DISPOSITIONS:
            raise InvalidInputError(
                message=f"disposition must be one of {', '.join(sorted(AGENT_DISPOSITIONS))}",
                field="disposition",
            )
        flags = payload.get("flags", ())
        if not isinstance(flags, list | tuple) or any(
            f not in AGENT_FLAGS for f in flags
        ):
            raise InvalidInputError(
                message=f"flags must be among {', '.join(sorted(AGENT_FLAGS))}",
                field="flags",
            )
        notes = payload.get("notes", "")
        answers = payload.get("answers", {})
        if not isinstance(notes, str) or not isinstance(answers, Mapping):
            raise InvalidInputError(
                message="notes must be text and answers a table by prompt id",
                field="answers" if isinstance(notes, str) else "notes",
            )
        script = options.script
        unknown = sorted(set(answers) - {p.id for p in script.prompts})
        if unknown:
            raise InvalidInputError(
                message=f"no prompt {unknown[0]!r} in script {script.name!r}",
                field=f"answers.{unknown[0]}",
            )
        await self._check_claim(context, current, payload)
        flagged = [AGENT_FLAGS[f] for f in flags]
        state = attrs.evolve(
            _replace_current(state, status=CallStatus.COMPLETED),
            notes=(state.notes + "\n" + notes).strip() if notes else state.notes,
            signals=_add(state.signals, *flagged),
        )
        if disposition == "no_answer":
            return await self._no_contact(context, options, state, "no_answer")
        if disposition == "call_back_later":
            state = attrs.evolve(state, signals=_add(state.signals, "call_back_later"))
            when = payload.get("call_back_at")
            if isinstance(when, str):
                try:
                    due = datetime.fromisoformat(when)
                except ValueError:
                    raise InvalidInputError(
                        message="call_back_at is not an ISO date-time",
                        field="call_back_at",
                    ) from None
                if due.tzinfo is None:  # the applicant's own clock
                    due = due.replace(tzinfo=self._zones(state)[0])
                provider = self._provider(current.provider)
                assert isinstance(provider, AgentDeskProvider)  # noqa: S101 - agent mode
                state = _replace_current(state, ended=True)
                return await self._queue_task(
                    context, options, state, provider, state.next_call, available_at=due
                )
            return await self._no_contact(context, options, state, "call_back_later")
        state = _replace_current(state, ended=True)
        if disposition == "wrong_person":
            return Finished(
                result=self._result(
                    context,
                    state,
                    ResultStatus.FAILED,
                    [*state.signals, "wrong_person", "identity_mismatch"],
                    detail="the agent reached someone else",
                    score=0.0,
                ),
                state=state,
            )
        if disposition == "declined":
            return Finished(
                result=self._result(
                    context,
                    state,
                    ResultStatus.FAILED,
                    [*state.signals, "intent_declined"],
                    detail="the applicant declined the loan",
                    score=0.0,
                ),
                state=state,
            )
        # Confirmed: every prompt's answer is judged as the IVR would.
        failed: Prompt | None = None
        for prompt in script.prompts:
            if prompt.expect.kind is AnswerKind.NONE:
                state = attrs.evolve(
                    state,
                    answers=(*state.answers, Answer(prompt_id=prompt.id, matched=None)),
                )
                continue
            given = answers.get(prompt.id)
            if not isinstance(given, str):
                raise InvalidInputError(
                    message=f"answer prompt {prompt.id!r}", field=f"answers.{prompt.id}"
                )
            digits, speech = _agent_answer(prompt, given)
            matched, confidence, heard = await self._judge(
                context, prompt, state.locale, digits, speech, None
            )
            signals = list(heard)
            if matched is None:
                signals.append("invalid_input")
                matched = False
            if matched is False:
                signals.append(prompt.mismatch_signal)
            state = attrs.evolve(
                state,
                answers=(
                    *state.answers,
                    Answer(
                        prompt_id=prompt.id,
                        matched=matched,
                        confidence=confidence,
                        signals=tuple(signals),
                    ),
                ),
                signals=_add(state.signals, *signals),
            )
            if matched is False and prompt.mismatch_action is MismatchAction.FAIL:
                failed = prompt
                break
            if matched is False and prompt.mismatch_action is MismatchAction.CALL_BACK:
                return await self._no_contact(
                    context, options, state, "call_back_later"
                )
        return Finished(
            result=_script_result(self, context, script, state, failed, hung_up=False),
            state=state,
        )


def _with_recording(state: PhoneCallState, data: Mapping[str, Any]) -> PhoneCallState:
    """The state with a recording's reference (never its media) kept for the evidence."""
    reference = data.get("recording")
    if isinstance(reference, str) and reference and reference not in state.recordings:
        call = data.get("call")
        return attrs.evolve(
            state,
            recordings=(*state.recordings, reference),
            recorded_calls=(*state.recorded_calls, call)
            if isinstance(call, int)
            else state.recorded_calls,
        )
    return state


def _text(texts: Mapping[str, str], locale: str, script: CallScript) -> str:
    return (
        texts.get(locale)
        or texts.get(script.default_locale)
        or next(iter(texts.values()), "")
    )


def _gather(prompt: Prompt, context: StepContext, locale: str) -> Gather:
    expect = prompt.expect
    if expect.kind is AnswerKind.SPEECH:
        return Gather(
            input="speech",
            timeout=prompt.timeout,
            hints=speech_keywords(prompt, context.applicant, locale),
        )
    if expect.kind is AnswerKind.YES_NO:
        return Gather(input="dtmf", num_digits=1, timeout=prompt.timeout)
    return Gather(input="dtmf", num_digits=expect.length, timeout=prompt.timeout)


def _agent_answer(prompt: Prompt, given: str) -> tuple[str, str]:
    """An agent's typed answer as the IVR would hear it: ``(digits, speech)``."""
    text = given.strip()
    if prompt.expect.kind is AnswerKind.YES_NO:
        lowered = text.lower()
        if lowered in ("yes", "no"):
            return (
                prompt.expect.yes_key if lowered == "yes" else prompt.expect.no_key
            ), ""
        return text, ""
    if prompt.expect.kind is AnswerKind.DIGITS:
        return text.upper().replace("X", "*"), ""
    return "", text


def _script_result(
    channel: PhoneCallChannel,
    context: StepContext,
    script: CallScript,
    state: PhoneCallState,
    failed: Prompt | None,
    *,
    hung_up: bool,
) -> ChannelResult:
    """The step's result from the prompts' answers."""
    answers = {answer.prompt_id: answer for answer in state.answers}
    signals = list(state.signals)
    total = credit = 0.0
    for prompt in script.prompts:
        if prompt.expect.kind is AnswerKind.NONE:
            continue
        total += prompt.weight
        answer = answers.get(prompt.id)
        if answer is not None and answer.matched:
            credit += prompt.weight * (0.5 if answer.hesitant else 1.0)
    for kind, signal in (
        (PromptKind.IDENTITY, "identity_confirmed"),
        (PromptKind.INTENT, "intent_confirmed"),
        (PromptKind.DETAIL, "details_completed"),
    ):
        asked = [
            p
            for p in script.prompts
            if p.kind is kind and p.expect.kind is not AnswerKind.NONE
        ]
        if asked and all(answers.get(p.id) and answers[p.id].matched for p in asked):
            signals.insert(
                0, signal
            ) if kind is PromptKind.IDENTITY else signals.append(signal)
    score = credit / total if total else None
    if hung_up:
        return channel._result(  # noqa: SLF001 - the channel's own helper
            context,
            state,
            ResultStatus.INCONCLUSIVE,
            [*signals, "hung_up"],
            detail=f"hung up after {len(state.answers)} of {len(script.prompts)} prompts",
            score=score,
        )
    if failed is not None:
        return channel._result(  # noqa: SLF001
            context,
            state,
            ResultStatus.FAILED,
            signals,
            detail=f"prompt {failed.id!r} ({failed.kind.value}) answered wrongly",
            score=score,
        )
    flagged = [s for s in signals if s in _MISMATCH_SIGNALS]
    status = ResultStatus.INCONCLUSIVE if flagged else ResultStatus.PASSED
    return channel._result(  # noqa: SLF001
        context,
        state,
        status,
        signals,
        detail=f"{len(state.answers)} prompts answered"
        + (f"; flagged: {', '.join(dict.fromkeys(flagged))}" if flagged else ""),
        score=score,
    )


def window_data(window: CallingWindow) -> dict[str, Any]:
    """A calling window as JSON, for an agent task."""
    return {
        "start": f"{window.start:%H:%M}",
        "end": None if window.end is None else f"{window.end:%H:%M}",
        "weekdays": sorted(window.weekdays),
        "blocked_dates": sorted(day.isoformat() for day in window.blocked_dates),
    }


def agent_task_body(  # noqa: PLR0917 - internal
    context: StepContext,
    options: PhoneCallOptions,
    state: PhoneCallState,
    task_id: str,
    number: int,
    available_at: datetime,
) -> str:
    """The JSON an agent sees: the script, the applicant masked, when to call."""
    applicant = context.applicant
    script = options.script
    zones = [ZoneInfo(name) for name in state.zones]
    local = available_at.astimezone(zones[0]) if zones else available_at
    return json.dumps(
        {
            "task_id": task_id,
            "session_id": context.session_id,
            "step_id": context.step_id,
            "attempt": context.attempt,
            "call": number,
            "locale": state.locale,
            "applicant": {
                "applicant_id": applicant.applicant_id,
                "name": mask_name(applicant.name),
                "phone": mask_phone(applicant.phone),
                "national_id": mask_id(applicant.national_id),
                "timezone": state.zones[0] if state.zones else applicant.timezone,
            },
            "calling_window": options.calling_window.describe(),
            # What the desk checks when an agent claims the task: the call
            # is made then, however long after it became available.
            "window": window_data(options.calling_window),
            "zones": list(state.zones),
            "call_from": local.isoformat(),
            "script": [
                {
                    "prompt_id": prompt.id,
                    "kind": prompt.kind.value,
                    "text": render(
                        script, prompt, applicant, state.locale, masked=True
                    ),
                    "expect": prompt.expect.kind.value,
                    "length": prompt.expect.length,
                }
                for prompt in script.prompts
            ],
        },
        ensure_ascii=False,
        sort_keys=True,
    )

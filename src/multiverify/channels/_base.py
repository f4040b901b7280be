"""The Channel protocol: what a way of verifying implements, and what it returns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from .._applicant import Applicant
from .._clock import Clock
from .._results import Challenge, ChannelResult
from .._specs import BUILTIN_CHANNELS, ChannelSpec
from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from ..stores import SharedState

__all__ = [
    "Channel",
    "ChannelRegistry",
    "Finished",
    "ProviderEvent",
    "StepContext",
    "StepMessage",
    "StepOutcome",
    "Submission",
    "TimerDue",
    "Waiting",
]


@attrs.frozen(kw_only=True)
class StepContext:
    """Everything a channel knows about the attempt it works on.

    Attributes:
        session_id: the session.
        step_id: the policy step.
        attempt: the attempt number, from 1.
        provider: the vendor to use, or ``None`` for the channel's own choice.
        idempotency_key: ``session:step:attempt``; send it with every side
            effect so a repeated call does not repeat the effect.
        applicant: who is verified.
        options: the step's ``options`` from the policy.
        clock: the runtime's clock.
        shared: state shared by every replica (quotas, cached values,
            locks), from the runtime's store; ``None`` when the store has none.
        providers: the step's providers in failover order, for a channel
            that fails over within an attempt (empty: the channel chooses).
    """

    session_id: str
    step_id: str
    attempt: int
    provider: str | None
    idempotency_key: str
    applicant: Applicant = attrs.field(repr=False)
    options: Mapping[str, Any] = attrs.field(factory=dict)
    clock: Clock = attrs.field(repr=False, eq=False)
    shared: SharedState | None = attrs.field(default=None, repr=False, eq=False)
    providers: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class Waiting:
    """The step waits for the applicant or a provider callback.

    Attributes:
        state: the channel's per-step state (an attrs instance, or ``None``).
        challenge: what the app shows the applicant.
        timers: channel timers ``(name, due)``; each comes back as [`TimerDue`][multiverify.channels.TimerDue].
    """

    state: Any = None
    challenge: Challenge | None = None
    timers: tuple[tuple[str, datetime], ...] = ()


@attrs.frozen(kw_only=True)
class Finished:
    """The step has its result."""

    result: ChannelResult
    state: Any = None


StepOutcome = Waiting | Finished


@attrs.frozen(kw_only=True)
class Submission:
    """Input from the app or applicant, such as a typed code."""

    payload: Mapping[str, Any] = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class ProviderEvent:
    """A verified provider callback, routed to its step.

    Attributes:
        session_id: the session it belongs to.
        step_id: the step it belongs to.
        kind: the vendor's event type, such as ``call.completed``.
        data: the parsed event.
        dedupe_key: the vendor's delivery id; a repeated delivery is ignored.
        attempt: the attempt it belongs to, when the vendor echoes it back.
    """

    session_id: str
    step_id: str
    kind: str
    data: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    dedupe_key: str | None = None
    attempt: int | None = None


@attrs.frozen(kw_only=True)
class TimerDue:
    """A channel timer asked for in [`Waiting.timers`][multiverify.channels.Waiting] is due."""

    name: str
    at: datetime


StepMessage = Submission | ProviderEvent | TimerDue


@runtime_checkable
class Channel(Protocol):
    """**Protocol**: a way to verify an applicant.

    A channel either finishes at once (a bureau lookup returns
    [`Finished`][multiverify.channels.Finished]) or returns [`Waiting`][multiverify.channels.Waiting] with a challenge, and later
    takes a [`Submission`][multiverify.channels.Submission], a [`ProviderEvent`][multiverify.channels.ProviderEvent] or a [`TimerDue`][multiverify.channels.TimerDue].
    Its per-step state is an attrs class (``state_type``); the runtime stores
    it with cattrs and hands it back. Raise a
    [`ProviderError`][multiverify.exceptions.ProviderError] for vendor
    trouble: retryable ones are retried, then the next provider is tried.
    """

    @property
    def spec(self) -> ChannelSpec:
        """The channel's name, signals and description."""
        ...

    @property
    def state_type(self) -> type[Any] | None:
        """The attrs class of the per-step state, or ``None`` if stateless."""
        ...

    async def start(self, context: StepContext, /) -> StepOutcome:
        """Begin an attempt (send the code, place the call, pull the report)."""
        ...

    async def handle(
        self, context: StepContext, state: Any, message: StepMessage, /
    ) -> StepOutcome:
        """Take input for a waiting attempt."""
        ...

    async def cancel(self, context: StepContext, state: Any, /) -> None:
        """Stop working on an attempt, best effort (hang up, expire the code)."""
        ...


class ChannelRegistry:
    """Channels by name: the built-in ones the app wires plus its own.

    >>> registry = ChannelRegistry()
    >>> len(registry)
    0
    """

    def __init__(self, channels: Iterable[Channel] = ()) -> None:
        self._channels: dict[str, Channel] = {}
        for channel in channels:
            self.register(channel)

    def register(self, channel: Channel, /) -> None:
        """Add a channel under ``channel.spec.name``.

        Raises:
            ConfigurationError: the name is taken, or it is not a channel.
        """
        if not isinstance(channel, Channel):
            raise ConfigurationError(message=f"{channel!r} does not implement Channel")
        name = channel.spec.name
        if name in self._channels:
            raise ConfigurationError(
                message=f"a channel named {name!r} is already registered"
            )
        self._channels[name] = channel

    def get(self, name: str, /) -> Channel:
        """The channel with this name.

        Raises:
            ConfigurationError: no such channel.
        """
        try:
            return self._channels[name]
        except KeyError:
            raise ConfigurationError(
                message=f"no channel named {name!r} (registered: {', '.join(sorted(self._channels)) or 'none'})"
            ) from None

    def specs(self) -> dict[str, ChannelSpec]:
        """Specs of the registered channels, for policy validation."""
        return {name: channel.spec for name, channel in self._channels.items()}

    @staticmethod
    def builtin_specs() -> dict[str, ChannelSpec]:
        """Specs of the channels that ship with multiverify."""
        return dict(BUILTIN_CHANNELS)

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def __iter__(self) -> Iterator[str]:
        return iter(self._channels)

    def __len__(self) -> int:
        return len(self._channels)

    def __repr__(self) -> str:
        return f"<multiverify.ChannelRegistry({', '.join(sorted(self._channels))})>"

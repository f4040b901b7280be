"""Picking a channel's provider by name: the wiring check and the per-step choice, shared by channels."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, TypeVar

from ..exceptions import ConfigurationError

__all__ = ["by_name", "step_provider"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


_P = TypeVar("_P", bound=_Named)


def by_name(providers: Iterable[_P], *, kind: str, channel: str) -> dict[str, _P]:
    """The providers by name, in order: the first is the default.

    Raises:
        ConfigurationError: no providers, or two with one name.
    """
    named: dict[str, _P] = {}
    for provider in providers:
        if provider.name in named:
            raise ConfigurationError(
                message=f"two {kind} providers are named {provider.name!r}"
            )
        named[provider.name] = provider
    if not named:
        raise ConfigurationError(message=f"{channel} needs a provider")
    return named


def step_provider(providers: Mapping[str, _P], name: str | None, *, kind: str) -> _P:
    """The provider a step names, or the default when it names none.

    Raises:
        ConfigurationError: the step names a provider the channel lacks.
    """
    if name is None:
        return next(iter(providers.values()))
    try:
        return providers[name]
    except KeyError:
        raise ConfigurationError(
            message=f"the step names {kind} provider {name!r}; this channel has "
            + ", ".join(providers)
        ) from None

"""Tests for the Channel protocol's registry."""

from __future__ import annotations

import pytest

from multiverify import ChannelSpec
from multiverify.channels import Channel, ChannelRegistry
from multiverify.exceptions import ConfigurationError
from multiverify.testing import Scripted, ScriptedChannel


def channel(name: str) -> ScriptedChannel:
    """A scripted channel named ``name``."""
    return ScriptedChannel(name, [Scripted.passes()])


class TestChannelRegistry:
    def test_empty(self) -> None:
        """A new registry holds nothing."""
        registry = ChannelRegistry()
        assert len(registry) == 0
        assert list(registry) == []
        assert registry.specs() == {}
        assert repr(registry) == "<multiverify.ChannelRegistry()>"

    def test_register_and_get(self) -> None:
        """Channels are registered under their spec's name and found by it."""
        sms, bureau = channel("sms_code"), channel("credit_bureau")
        registry = ChannelRegistry([sms])
        registry.register(bureau)
        assert registry.get("sms_code") is sms
        assert registry.get("credit_bureau") is bureau

    def test_contains_iter_len(self) -> None:
        """The registry is a collection of names, in registration order."""
        registry = ChannelRegistry([channel("sms_code"), channel("custom")])
        assert "custom" in registry
        assert "phone_call" not in registry
        assert 3 not in registry
        assert list(registry) == ["sms_code", "custom"]
        assert len(registry) == 2

    def test_repr_sorts_names(self) -> None:
        """The repr lists the names, sorted."""
        registry = ChannelRegistry([channel("sms_code"), channel("custom")])
        assert repr(registry) == "<multiverify.ChannelRegistry(custom, sms_code)>"

    def test_duplicate_name(self) -> None:
        """A second channel under a taken name is refused and the first one kept."""
        first = channel("sms_code")
        registry = ChannelRegistry([first])
        with pytest.raises(
            ConfigurationError, match="'sms_code' is already registered"
        ):
            registry.register(channel("sms_code"))
        assert registry.get("sms_code") is first

    def test_not_a_channel(self) -> None:
        """An object that does not implement Channel is refused."""
        registry = ChannelRegistry()
        with pytest.raises(ConfigurationError, match="does not implement Channel"):
            registry.register(object())  # type: ignore[arg-type]
        assert len(registry) == 0

    def test_unknown_name(self) -> None:
        """Getting an unknown name lists what is registered."""
        with pytest.raises(
            ConfigurationError, match=r"'video_sign' \(registered: none\)"
        ):
            ChannelRegistry().get("video_sign")
        registry = ChannelRegistry([channel("sms_code"), channel("custom")])
        with pytest.raises(ConfigurationError, match=r"registered: custom, sms_code"):
            registry.get("video_sign")

    def test_specs(self) -> None:
        """``specs`` maps every registered name to its channel's spec."""
        spec = ChannelSpec(name="custom", signals={"ok"})
        custom = ScriptedChannel("custom", [Scripted.passes()], spec=spec)
        registry = ChannelRegistry([custom, channel("sms_code")])
        specs = registry.specs()
        assert specs["custom"] is spec
        assert specs["sms_code"].name == "sms_code"
        assert set(specs) == {"custom", "sms_code"}

    def test_builtin_specs(self) -> None:
        """The built-in specs name the four shipped channels and are a fresh copy."""
        specs = ChannelRegistry.builtin_specs()
        assert set(specs) == {"credit_bureau", "phone_call", "sms_code", "video_sign"}
        assert specs["credit_bureau"].automatic
        assert "fraud_alert" in specs["credit_bureau"].signals
        specs.clear()
        assert len(ChannelRegistry.builtin_specs()) == 4

    def test_scripted_channel_is_a_channel(self) -> None:
        """The runtime-checkable protocol recognises a channel by its members."""
        assert isinstance(channel("x"), Channel)
        assert not isinstance(object(), Channel)

"""A recording SmsProvider for the SMS channel's tests (channels and stores)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from multiverify.exceptions import ProviderError
from multiverify.providers import SmsMessage, SmsReceipt


class FakeSms:
    """A recording SmsProvider: ``errors`` are raised in turn, ``None`` sends."""

    def __init__(
        self,
        name: str = "alpha",
        errors: Sequence[ProviderError | None] = (),
        *,
        deliver_before_error: bool = False,
    ) -> None:
        self._name = name
        self.errors = list(errors)
        self.deliver_before_error = deliver_before_error
        self.sent: list[SmsMessage] = []
        self.calls = 0
        self.finds: list[str] = []
        self.findable = False

    @property
    def name(self) -> str:
        return self._name

    async def send(self, message: SmsMessage, /) -> SmsReceipt:
        self.calls += 1
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            if self.deliver_before_error:
                self.sent.append(message)  # it went out, and then the answer was lost
            raise error
        self.sent.append(message)
        return SmsReceipt(
            provider=self._name, message_id=f"{self._name}-{len(self.sent)}"
        )

    async def find(
        self, message: SmsMessage, /, *, sent_after: datetime
    ) -> SmsReceipt | None:
        self.finds.append(message.reference)
        if self.findable and any(m.reference == message.reference for m in self.sent):
            return SmsReceipt(
                provider=self._name, message_id="found", status="delivered"
            )
        return None

    async def aclose(self) -> None:
        return None

    @property
    def code(self) -> str:
        """The last code sent."""
        return self.sent[-1].code

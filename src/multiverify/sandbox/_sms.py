"""The sandbox SMS vendor: Twilio's Messages API simulated at the HTTP level, with inboxes.

[`SandboxSms`][multiverify.sandbox.SandboxSms] is an httpx transport that
answers ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` the way
Twilio does (HTTP Basic auth, form fields ``To``, ``From`` and ``Body``, a
Message resource in the answer, Twilio's error codes for bad requests) and
delivers each message into the inbox of its number. The real
[`TwilioMessaging`][multiverify.providers.TwilioMessaging] provider talks to
it, so the SMS channel runs unchanged in the demo; the personas read their
codes from the inboxes.
"""

from __future__ import annotations

import base64
import itertools
import re
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import attrs
import httpx

from .._clock import Clock, SystemClock
from .._masking import mask_phone
from ..channels import SmsCodeChannel, sms_segments
from ..providers import TwilioAccount, TwilioMessaging

__all__ = ["SandboxMessage", "SandboxSms", "SandboxSmsCodeChannel"]

API_BASE = "https://api.twilio.sandbox.multiverify.invalid"
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CODE = re.compile(r"(?<![0-9A-Za-z])([0-9A-Za-z]{4,10})(?![0-9A-Za-z])")


@attrs.frozen(kw_only=True)
class SandboxMessage:
    """One text the sandbox vendor delivered.

    Attributes:
        sid: the simulated Message sid (``SM...``).
        to: the destination, E.164.
        sender: the ``From`` of the request.
        body: the text.
        sent_at: when the vendor took it.
        segments: segments by the vendor's count.
    """

    sid: str
    to: str = attrs.field(repr=mask_phone)
    sender: str
    body: str = attrs.field(repr=False)
    sent_at: datetime
    segments: int


class SandboxSmsCodeChannel(SmsCodeChannel):
    """An [`SmsCodeChannel`][multiverify.channels.SmsCodeChannel] on the sandbox vendor (real channel, sandbox vendor)."""

    sandbox_vendor: ClassVar[bool] = True


def _error(status: int, code: int, message: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


class SandboxSms:
    """A simulated SMS gateway speaking Twilio's Messages API, for the demo and tests.

    Args:
        account_sid: the account its URLs and Basic auth expect.
        auth_token: the token its Basic auth expects.
        clock: the time source for ``sent_at``.
        unreachable: numbers it refuses as Twilio does a number it cannot
            route to (error 21612).
    """

    def __init__(
        self,
        *,
        account_sid: str = "ACsandbox",
        auth_token: str = "sandbox-token",  # noqa: S107 - the simulation's own, public
        clock: Clock | None = None,
        unreachable: Iterable[str] = (),
    ) -> None:
        self.account_sid = account_sid
        self._auth = "Basic " + base64.b64encode(
            f"{account_sid}:{auth_token}".encode()
        ).decode("ascii")
        self._token = auth_token
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._unreachable = frozenset(unreachable)
        self._inboxes: dict[str, list[SandboxMessage]] = {}
        self._sids = itertools.count(1)
        self.transport = httpx.MockTransport(self._handle)
        """The transport to build an ``httpx.AsyncClient`` on."""

    def __repr__(self) -> str:
        count = sum(len(inbox) for inbox in self._inboxes.values())
        return f"<multiverify.sandbox.SandboxSms(messages={count})>"

    def provider(
        self, *, sender: str = "multiverify", name: str = "sandbox-sms"
    ) -> TwilioMessaging:
        """A [`TwilioMessaging`][multiverify.providers.TwilioMessaging] provider wired to this vendor."""
        account = TwilioAccount(
            account_sid=self.account_sid,
            auth_token=self._token,
            client=httpx.AsyncClient(transport=self.transport),
            api_base=API_BASE,
            provider=name,
        )
        return TwilioMessaging(account, from_=sender, name=name)

    def channel(self, **settings: Any) -> SandboxSmsCodeChannel:
        """The real SMS channel on this vendor.

        ``settings`` go to [`SmsCodeChannel`][multiverify.channels.SmsCodeChannel];
        by default the brand is ``multiverify`` and the secret is fresh.
        """
        settings.setdefault("secret", secrets.token_bytes(32))
        settings.setdefault("brand", "multiverify")
        return SandboxSmsCodeChannel([self.provider()], **settings)

    def inbox(self, number: str) -> list[SandboxMessage]:
        """The messages delivered to ``number`` (E.164), oldest first."""
        return list(self._inboxes.get(number, ()))

    def latest_code(self, number: str) -> str | None:
        """The code in the newest message to ``number``, as the applicant reads it."""
        inbox = self._inboxes.get(number)
        if not inbox:
            return None
        found = _CODE.findall(inbox[-1].body.replace("【", " ").replace("】", " "))
        codes = [token for token in found if any(c.isdigit() for c in token)]
        return codes[0] if codes else None

    def _handle(self, request: httpx.Request) -> httpx.Response:
        match = _PATH.match(request.url.path)
        if request.method != "POST" or match is None:
            return _error(404, 20404, "The requested resource was not found")
        if (
            request.headers.get("authorization") != self._auth
            or match["account"] != self.account_sid
        ):
            return _error(401, 20003, "Authenticate")
        form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
        to, body = form.get("To", ""), form.get("Body", "")
        if not _E164.match(to):
            return _error(
                400, 21211, f"The 'To' number {to} is not a valid phone number."
            )
        if to in self._unreachable:
            return _error(
                400, 21612, "The 'To' phone number is not currently reachable."
            )
        if not body:
            return _error(400, 21602, "Message body is required.")
        sender = form.get("From") or form.get("MessagingServiceSid", "")
        message = SandboxMessage(
            sid=f"SM{next(self._sids):032x}",
            to=to,
            sender=sender,
            body=body,
            sent_at=self._clock.now(),
            segments=sms_segments(body).segments,
        )
        self._inboxes.setdefault(to, []).append(message)
        return httpx.Response(
            201,
            json={
                "sid": message.sid,
                "account_sid": self.account_sid,
                "to": to,
                "from": sender,
                "body": body,
                "status": "queued",
                "num_segments": str(message.segments),
                "direction": "outbound-api",
            },
        )

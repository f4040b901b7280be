"""What every vendor's webhook handler takes and gives: raw requests in, events out."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

import attrs

from .._session import Session
from ..channels import ProviderEvent
from ..exceptions import WebhookFormatError

__all__ = ["WebhookHandler", "WebhookRequest", "WebhookResponse"]


#: The most fields a form callback may have. Twilio's carry a few dozen;
#: parsing and signing hundreds of thousands (a forged megabyte of ``a=&``)
#: would hold the event loop for a second.
_MAX_FORM_FIELDS = 1000


def _lower_keys(headers: Mapping[str, str]) -> Mapping[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@attrs.frozen(kw_only=True)
class WebhookRequest:
    """A vendor's HTTP callback exactly as it arrived, before anything is trusted.

    Attributes:
        method: the HTTP method, such as ``POST``.
        url: the full public URL the vendor called: scheme, host, port as
            the vendor saw them, path and query. Behind a proxy this is the
            outside URL, not the one the app server sees; signatures cover it.
        headers: the request headers (names are matched case-insensitively).
        body: the raw body, byte for byte; signatures cover it.
        received_at: when it arrived, from the runtime's clock.
    """

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_lower_keys)
    body: bytes = attrs.field(default=b"", repr=False)
    received_at: datetime

    def header(self, name: str) -> str | None:
        """A header's value, or ``None``."""
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        """The media type without parameters, lowercased (``""`` when absent)."""
        value = self.header("content-type") or ""
        return value.split(";", 1)[0].strip().lower()

    def form(self, vendor: str) -> list[tuple[str, str]]:
        """The body as ``application/x-www-form-urlencoded`` pairs, in order.

        Raises:
            WebhookFormatError: the body is not valid UTF-8 form data, or has
                more than 1000 fields.
        """
        try:
            text = self.body.decode("utf-8")
            return parse_qsl(
                text,
                keep_blank_values=True,
                strict_parsing=bool(text),
                max_num_fields=_MAX_FORM_FIELDS,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookFormatError(
                message=f"{vendor} callback body is not form data: {exc}",
                vendor=vendor,
            ) from None

    def json(self, vendor: str) -> dict[str, Any]:
        """The body as a JSON object.

        Raises:
            WebhookFormatError: the body is not a JSON object, or is nested
                deeper than the decoder can follow.
        """
        try:
            data = json.loads(self.body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise WebhookFormatError(
                message=f"{vendor} callback body is not JSON: {exc}", vendor=vendor
            ) from None
        except RecursionError:
            raise WebhookFormatError(
                message=f"{vendor} callback body is JSON nested too deeply to read",
                vendor=vendor,
            ) from None
        if not isinstance(data, dict):
            raise WebhookFormatError(
                message=f"{vendor} callback body is JSON but not an object",
                vendor=vendor,
            )
        return data


@attrs.frozen(kw_only=True)
class WebhookResponse:
    """The HTTP answer a vendor expects (an empty 204, or the next TwiML or NCCO document)."""

    status: int = 204
    content_type: str = "text/plain; charset=utf-8"
    body: bytes = attrs.field(default=b"", repr=False)


class WebhookHandler(Protocol):
    """**Protocol**: verifies and parses one vendor's callbacks.

    The webhook intake calls [`parse`][multiverify.webhooks.WebhookHandler.parse]
    with the raw request, routes each event to its session
    (``Verifier.handle_event``, which deduplicates by ``dedupe_key``), then
    asks [`respond`][multiverify.webhooks.WebhookHandler.respond] what to
    answer. A handler never applies anything itself.
    """

    @property
    def vendor(self) -> str:
        """The route's name, such as ``twilio-voice``."""
        ...

    async def parse(self, request: WebhookRequest, /) -> Sequence[ProviderEvent]:
        """Check the request's signature and turn it into events.

        An event with no session to go to (a test ping, a kind the channel
        ignores) is left out.

        Raises:
            WebhookSignatureError: unsigned, forged or too old.
            WebhookFormatError: signed but malformed.
        """
        ...

    def respond(
        self, request: WebhookRequest, sessions: Sequence[Session | None], /
    ) -> WebhookResponse:
        """The answer once the events were applied.

        ``sessions`` holds, per parsed event, the session as saved after it
        (``None`` for a duplicate delivery or a session that had finished).
        """
        ...

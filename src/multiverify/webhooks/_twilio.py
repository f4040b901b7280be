"""``X-Twilio-Signature``: how Twilio signs its callbacks, and the check.

The algorithm (https://www.twilio.com/docs/usage/security#validating-requests):
take the full URL Twilio requested, query included; for a form POST append
every parameter name immediately followed by its value, names sorted and the
values of a repeated name sorted; HMAC-SHA1 with the account's auth token;
base64. A JSON body is not signed itself: Twilio appends ``bodySHA256=<hex
sha256 of the raw body>`` to the URL's query, signs the URL alone, and the
body's hash is compared with that parameter. Twilio is inconsistent about
the port (``:443``, ``:80``), so a signature over the URL with or without
its port is accepted. Webhooks matched by a Webhooks Rule are signed with a
shared key and HMAC-SHA256 instead, announced by the header
``X-Twilio-Webhooks-Signature-Settings: key=<id>,algorithm=HMAC_SHA256``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..exceptions import WebhookFormatError, WebhookSignatureError
from ._base import WebhookRequest

__all__ = ["TwilioSignature", "twilio_signature"]

_VENDOR = "twilio"
_DEFAULT_PORTS = {"https": 443, "http": 80}
_ALGORITHMS: dict[str, Literal["sha1", "sha256"]] = {
    "HMAC_SHA1": "sha1",
    "HMAC_SHA256": "sha256",
}


def twilio_signature(
    key: str,
    url: str,
    params: Iterable[tuple[str, str]] = (),
    *,
    algorithm: Literal["sha1", "sha256"] = "sha1",
) -> str:
    """The signature Twilio sends for a request to ``url`` with form ``params``.

    >>> twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2",
    ...     [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"),
    ...      ("Digits", "1234"), ("From", "+12349013030"), ("To", "+18005551212")])
    '0/KCTR6DLpKmkAf8muzZqo1nDgQ='
    """
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    signed = url + "".join(
        name + value for name in sorted(values) for value in sorted(values[name])
    )
    digest = hmac.new(key.encode(), signed.encode(), algorithm).digest()
    return base64.b64encode(digest).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """The URL as given, with its default port added, and with its port removed."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a port Twilio could have called: the URL as given only
        return [url]
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    variants = [url]
    if port is None:
        default = _DEFAULT_PORTS.get(parts.scheme)
        if default is not None:
            variants.append(
                urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
            )
    else:
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}")))
    return variants


class TwilioSignature:
    """Checks that a callback really comes from Twilio.

    Args:
        auth_token: the account's auth token (the HMAC-SHA1 key).
        shared_keys: Webhooks Rules shared keys by their id, for callbacks
            signed with ``X-Twilio-Webhooks-Signature-Settings``.
    """

    def __init__(
        self, auth_token: str, *, shared_keys: Mapping[str, str] | None = None
    ) -> None:
        self._auth_token = auth_token
        self._shared_keys = dict(shared_keys or {})

    def __repr__(self) -> str:
        return f"<multiverify.webhooks.TwilioSignature(shared_keys={len(self._shared_keys)})>"

    def verify(self, request: WebhookRequest) -> list[tuple[str, str]]:
        """Check the request's signature and return its form parameters.

        A JSON callback returns ``[]`` once its body hash matched; read its
        body with ``request.json``.

        Raises:
            WebhookSignatureError: no signature, a wrong one, a JSON body
                whose hash does not match ``bodySHA256``, or a body that is
                neither form data nor covered by ``bodySHA256``.
            WebhookFormatError: an unknown signature algorithm.
        """
        signature = request.header("x-twilio-signature")
        if not signature:
            raise WebhookSignatureError(
                message="callback has no X-Twilio-Signature header", vendor=_VENDOR
            )
        key, algorithm = self._key(request)
        query = dict(parse_qsl(urlsplit(request.url).query, keep_blank_values=True))
        body_hash = query.get("bodySHA256")
        params: list[tuple[str, str]] = []
        if body_hash is None and request.method.upper() == "POST":
            try:
                params = request.form(_VENDOR)
            except WebhookFormatError as exc:
                # Twilio signs a form body's parameters, or a JSON body through
                # bodySHA256: a body that is neither cannot be Twilio's.
                raise WebhookSignatureError(
                    message="callback URL has no bodySHA256 and its body is not "
                    f"form data, so no signature can cover it: {exc}",
                    vendor=_VENDOR,
                ) from None
        # Compared as bytes: a header may hold any character, and
        # compare_digest refuses non-ASCII strings.
        given = signature.encode()
        if not any(
            hmac.compare_digest(
                twilio_signature(key, url, params, algorithm=algorithm).encode(),
                given,
            )
            for url in _port_variants(request.url)
        ):
            raise WebhookSignatureError(
                message="X-Twilio-Signature does not match the request", vendor=_VENDOR
            )
        if body_hash is not None:
            actual = hashlib.sha256(request.body).hexdigest()
            if not hmac.compare_digest(actual.encode(), body_hash.lower().encode()):
                raise WebhookSignatureError(
                    message="callback body does not match its bodySHA256",
                    vendor=_VENDOR,
                )
        return params

    def _key(self, request: WebhookRequest) -> tuple[str, Literal["sha1", "sha256"]]:
        settings = request.header("x-twilio-webhooks-signature-settings")
        if settings is None:
            return self._auth_token, "sha1"
        fields = dict(
            part.strip().partition("=")[::2] for part in settings.split(",") if part
        )
        algorithm = _ALGORITHMS.get(fields.get("algorithm", "HMAC_SHA1"))
        if algorithm is None:
            raise WebhookFormatError(
                message=f"unknown signature algorithm {fields.get('algorithm')!r}",
                vendor=_VENDOR,
            )
        key_id = fields.get("key")
        if key_id is None:
            return self._auth_token, algorithm
        try:
            return self._shared_keys[key_id], algorithm
        except KeyError:
            raise WebhookSignatureError(
                message=f"callback is signed with unknown shared key {key_id!r}",
                vendor=_VENDOR,
            ) from None

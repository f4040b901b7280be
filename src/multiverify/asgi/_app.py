"""The Starlette app: vendor webhooks verified, deduplicated and routed; codes submitted.

A webhook goes through four stages: the public URL the vendor called is
rebuilt (signatures cover it), the vendor's handler checks the signature
and parses events, the runtime applies each event to its session (the
runtime deduplicates by the event's ``dedupe_key``, in the store or in the
workflow, so any replica may receive any delivery), and the handler says
what to answer: an empty 204, a 200, or the next TwiML or NCCO document of
a call. A forged or malformed callback is refused before anything is
applied, with nothing in the answer that says why; the reason goes to the
log and to the ``on_rejected`` hooks.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import quote, unquote

import attrs

from .._applicant import Applicant
from .._clock import Clock, SystemClock
from .._serde import unstructure
from .._session import Session, StepState
from ..channels import ProviderEvent
from ..exceptions import (
    ConcurrentUpdateError,
    ConfigurationError,
    InvalidInputError,
    MultiverifyError,
    ProviderError,
    ProviderRateLimitedError,
    QuotaExceededError,
    SessionFinishedError,
    SessionNotFoundError,
    StepNotFoundError,
    StepNotWaitingError,
    StoreUnavailableError,
    WebhookError,
    WebhookFormatError,
    WebhookSignatureError,
)
from ..webhooks import WebhookHandler, WebhookRequest, WebhookResponse

try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    raise ImportError(
        "multiverify.asgi needs Starlette: pip install 'multiverify[asgi]'"
    ) from exc

__all__ = [
    "OnRejected",
    "Rejection",
    "Runtime",
    "client_address",
    "create_app",
    "public_url",
]

log = logging.getLogger("multiverify.asgi")

_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 3986 characters a path keeps unescaped, as vendors send them.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_RETRY_AFTER = "5"


class Runtime(Protocol):
    """**Protocol**: the runtime calls the app makes.

    The embedded [`Verifier`][multiverify.Verifier] and
    [`TemporalVerifier`][multiverify.temporal.TemporalVerifier] both are one.
    """

    async def start(
        self,
        applicant: Applicant,
        *,
        policy: str | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create a session and start the steps that are ready."""
        ...

    async def submit(
        self, session_id: str, step_id: str, payload: Mapping[str, Any]
    ) -> Session:
        """Hand the applicant's input to a waiting step."""
        ...

    async def handle_event(self, event: ProviderEvent) -> Session | None:
        """Apply a verified vendor callback; ``None`` for a repeated delivery."""
        ...

    async def get(self, session_id: str) -> Session:
        """The session as stored."""
        ...


@attrs.frozen(kw_only=True)
class Rejection:
    """A vendor callback the app refused, for the security log.

    Attributes:
        vendor: the route that received it, such as ``twilio-voice``.
        error: the error's class name (``WebhookSignatureError`` or
            ``WebhookFormatError``).
        reason: what was wrong (never sent back to the caller).
        url: the public URL it was checked against.
        client: the caller's address, when known.
        at: when it arrived.
    """

    vendor: str
    error: str
    reason: str
    url: str
    client: str | None
    at: datetime


OnRejected = Callable[[Rejection], Awaitable[None]]
"""A hook called for every refused callback (after it was logged)."""


def _first(value: str | None) -> str | None:
    """The first item of a comma-separated forwarding header: the client-facing hop."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", ())
    }


def public_url(
    scope: Mapping[str, Any],
    *,
    base: str | None = None,
    trust_forwarded: bool = False,
) -> str:
    """The URL a caller used to reach this request, as a vendor signs it.

    Args:
        scope: the request's ASGI scope.
        base: the public URL of the server's root, such as
            ``https://verify.example.com`` or, behind a proxy that strips a
            prefix, ``https://example.com/verify``; the request's path and
            query are appended to it. It wins over any header.
        trust_forwarded: read ``X-Forwarded-Proto``, ``X-Forwarded-Host``,
            ``X-Forwarded-Port`` and ``X-Forwarded-Prefix`` (the first,
            client-facing value of each). Only behind a proxy that sets them:
            anyone can send them otherwise.

    Without either, the URL is built from the request's scheme and ``Host``
    header.
    """
    headers = _headers(scope)
    raw = scope.get("raw_path")
    path: str = scope["path"]
    written = raw.decode("latin-1") if isinstance(raw, bytes) else None
    # The path as the caller wrote it, percent-escapes and all, when the
    # server kept it (and no root path was added to it).
    path = written if written and unquote(written) == path else quote(path, _PATH_SAFE)
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    tail = f"{path}?{query}" if query else path
    if base is not None:
        return base.rstrip("/") + tail
    scheme = str(scope.get("scheme", "http"))
    host = headers.get("host")
    prefix = ""
    if trust_forwarded:
        # A scheme is case-insensitive (RFC 3986); vendors sign it lowercased.
        scheme = (_first(headers.get("x-forwarded-proto")) or scheme).lower()
        host = _first(headers.get("x-forwarded-host")) or host
        port = _first(headers.get("x-forwarded-port"))
        if host is not None and port is not None and port.isascii() and port.isdigit():
            name = _without_host_port(host)
            host = name if int(port) == _DEFAULT_PORTS.get(scheme) else f"{name}:{port}"
        prefix = (_first(headers.get("x-forwarded-prefix")) or "").strip("/")
        prefix = f"/{prefix}" if prefix else ""
    if host is None:
        server = scope.get("server")
        if server is None:
            return prefix + tail
        name, port_number = server
        host = (
            name
            if port_number == _DEFAULT_PORTS.get(scheme)
            else f"{name}:{port_number}"
        )
    return f"{scheme}://{host}{prefix}{tail}"


def _without_host_port(host: str) -> str:
    """A ``Host`` value without its port: ``example.com``, ``[2001:db8::1]``."""
    if host.startswith("["):  # an IPv6 literal: its colons are no port
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0]


def client_address(scope: Mapping[str, Any], *, trust_forwarded: bool) -> str | None:
    """The caller's IP address: the last ``X-Forwarded-For`` entry when trusted, else the peer's.

    The last entry is the one the proxy in front of the app added (the
    address it saw); entries before it are whatever the client sent, so an
    applicant cannot dodge the abuse limits by sending the header. ``None``
    when neither holds an IP address. The code-submission route passes it to
    the SMS abuse limits as ``client_ip``. A port some proxies add to the
    entry (``203.0.113.7:5555``, ``[2001:db8::1]:443``) is left out.
    """
    candidate: str | None = None
    if trust_forwarded:
        forwarded = _headers(scope).get("x-forwarded-for", "")
        candidate = forwarded.rsplit(",", 1)[-1].strip() or None
    if candidate is None:
        client = scope.get("client")
        candidate = client[0] if client else None
    if candidate is None:
        return None
    try:
        return str(ipaddress.ip_address(_without_port(candidate)))
    except ValueError:
        return None


def _without_port(address: str) -> str:
    """An address as some proxies forward it, ``203.0.113.7:5555`` or ``[2001:db8::1]:443``, without the port."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") == 1:  # IPv4 and a port; an IPv6 address has more colons
        return address.split(":", 1)[0]
    return address


def _error(
    status: int, code: str, *, retry_after: str | None = None, **fields: Any
) -> JSONResponse:
    """The app's error body; with ``Retry-After`` when given, and on every 503."""
    if retry_after is None and status == 503:  # noqa: PLR2004
        retry_after = _RETRY_AFTER
    headers = None if retry_after is None else {"retry-after": retry_after}
    return JSONResponse({"error": code, **fields}, status_code=status, headers=headers)


def _retry_after(exc: ProviderError) -> str:
    """The seconds to wait before a retry: a throttling vendor's hint, else the default."""
    if isinstance(exc, ProviderRateLimitedError) and exc.retry_after is not None:
        try:
            return str(max(1, math.ceil(exc.retry_after)))
        except (OverflowError, ValueError):  # an infinite or NaN hint
            pass
    return _RETRY_AFTER


async def _http_error(request: Request, exc: Exception) -> Response:
    """A routing refusal (no such route, another method) in the app's error shape."""
    del request
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = HTTPStatus(status).phrase.lower().replace(" ", "_")
    response = _error(status, code)
    if isinstance(exc, HTTPException) and exc.headers:
        response.headers.update(exc.headers)  # Allow, for a 405
    return response


class _TooLargeError(Exception):
    """The body exceeds the app's limit."""


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refusing one longer than ``limit`` bytes as it streams."""
    declared = request.headers.get("content-length")
    # isdigit alone takes digits int() refuses, such as a superscript two.
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and int(declared) > limit
    ):
        raise _TooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _not_json(constant: str) -> Any:
    """``json.loads``'s hook for ``NaN`` and ``Infinity``, which JSON (RFC 8259) does not have."""
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    """A JSON number as a float, refusing one too large for a float (``1e999``)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large a number")
    return value


def _is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON: ``application/json`` or ``application/*+json``."""
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _answer(response: WebhookResponse) -> Response:
    if response.status == 204:  # noqa: PLR2004 - no content, no content type
        return Response(status_code=204)
    return Response(
        response.body,
        status_code=response.status,
        headers={"content-type": response.content_type},
    )


def _step_view(session: Session, step_id: str) -> dict[str, Any]:
    """What the applicant's app learns after a submission: no personal data."""
    record = session.step(step_id)
    return {
        "session_id": session.session_id,
        "status": session.status.value,
        "outcome": None if session.verdict is None else session.verdict.outcome.value,
        "step_id": step_id,
        "state": record.state.value,
        "result": None if record.result is None else record.result.status.value,
        "challenge": None
        if record.challenge is None
        else unstructure(record.challenge),
    }


# What a submission's typed errors become: status and a stable code.
_SUBMIT_ERRORS: tuple[tuple[type[MultiverifyError], int, str], ...] = (
    (SessionNotFoundError, 404, "session_not_found"),
    (StepNotFoundError, 404, "step_not_found"),
    (SessionFinishedError, 409, "session_finished"),
    (StepNotWaitingError, 409, "step_not_waiting"),
    (ConcurrentUpdateError, 409, "conflict"),
    (QuotaExceededError, 429, "quota_exceeded"),
    (InvalidInputError, 422, "invalid_input"),
    (StoreUnavailableError, 503, "unavailable"),
)


def _submit_error(exc: MultiverifyError, *, now: datetime) -> JSONResponse | None:
    if isinstance(exc, ProviderError):
        # A vendor the channel could not reach (checking a vendor's own
        # code): nothing changed, so the applicant may simply try again.
        if exc.retryable:
            return _error(503, "unavailable", retry_after=_retry_after(exc))
        return None
    for kind, status, code in _SUBMIT_ERRORS:
        if isinstance(exc, kind):
            fields: dict[str, Any] = {}
            if isinstance(exc, InvalidInputError):
                fields["field"] = exc.field
            retry_after = None
            if isinstance(exc, QuotaExceededError):
                fields["quota"] = exc.quota
                if exc.retry_at is not None:
                    fields["retry_at"] = exc.retry_at.isoformat()
                    wait = (exc.retry_at - now).total_seconds()
                    retry_after = str(max(1, math.ceil(wait)))
            return _error(status, code, retry_after=retry_after, **fields)
    return None


_Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(endpoint: _Endpoint, route: str) -> _Endpoint:
    """``endpoint``, answering a typed ``500`` (and logging) for what it did not foresee.

    A handler or an ``authorize`` of the lending app's own may raise
    anything; the caller gets the app's error shape, never a traceback page.
    """

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception:
            log.exception("request to %s failed", route)
            return _error(500, "internal")

    return guarded


class _App:
    """The routes' shared settings and the two endpoints."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        base_url: str | None,
        trust_forwarded: bool,
        clock: Clock,
        on_rejected: Sequence[OnRejected],
        authorize: Callable[[Request, str], Awaitable[bool]] | None,
        max_body: int,
    ) -> None:
        self.runtime = runtime
        self.base_url = base_url
        self.trust_forwarded = trust_forwarded
        self.clock = clock
        self.on_rejected = tuple(on_rejected)
        self.authorize = authorize
        self.max_body = max_body

    def url(self, request: Request) -> str:
        return public_url(
            request.scope, base=self.base_url, trust_forwarded=self.trust_forwarded
        )

    def client(self, request: Request) -> str | None:
        return client_address(request.scope, trust_forwarded=self.trust_forwarded)

    async def rejected(
        self, request: Request, vendor: str, url: str, error: WebhookError
    ) -> None:
        rejection = Rejection(
            vendor=vendor,
            error=type(error).__name__,
            reason=str(error),
            url=url.split("?", 1)[0],
            client=self.client(request),
            at=self.clock.now(),
        )
        log.warning(
            "refused a %s callback from %s: %s: %s",
            vendor,
            rejection.client or "an unknown address",
            rejection.error,
            rejection.reason,
        )
        for hook in self.on_rejected:
            try:
                await hook(rejection)
            except Exception:
                log.exception("on_rejected hook failed")

    def webhook(self, handler: WebhookHandler) -> _Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                body = await _body(request, self.max_body)
            except _TooLargeError:
                return _error(413, "too_large")
            except ClientDisconnect:
                return _error(400, "malformed")
            incoming = WebhookRequest(
                method=request.method,
                url=self.url(request),
                headers=dict(request.headers.items()),
                body=body,
                received_at=self.clock.now(),
            )
            try:
                events = await handler.parse(incoming)
            except WebhookSignatureError as exc:
                await self.rejected(request, handler.vendor, incoming.url, exc)
                return _error(403, "forbidden")
            except WebhookFormatError as exc:
                await self.rejected(request, handler.vendor, incoming.url, exc)
                return _error(400, "malformed")
            sessions: list[Session | None] = []
            for event in events:
                applied = await self.apply(event)
                if isinstance(applied, Response):
                    return applied
                sessions.append(applied)
            return _answer(handler.respond(incoming, sessions))

        return endpoint

    async def apply(self, event: ProviderEvent) -> Session | Response | None:
        """Hand one event to the runtime: the session after it, ``None``, or a refusal."""
        try:
            return await self.runtime.handle_event(event)
        except StepNotWaitingError:
            if await self.early(event):
                # Refused before its delivery was counted: the vendor's
                # retry will bring it back once the step has started.
                return _error(503, "retry")
            return None  # late: the runtime noted it in the audit trail
        except (SessionNotFoundError, SessionFinishedError, StepNotFoundError) as exc:
            log.info("vendor event %s not applied: %s", event.kind, exc)
            return None
        except (ConcurrentUpdateError, StoreUnavailableError) as exc:
            log.warning("vendor event %s not applied yet: %s", event.kind, exc)
            return _error(503, "retry")
        except ProviderError as exc:
            if exc.retryable:
                log.warning("vendor event %s not applied yet: %s", event.kind, exc)
                return _error(503, "retry", retry_after=_retry_after(exc))
            log.exception("vendor event %s of %s failed", event.kind, event.session_id)
            return _error(500, "internal")
        except Exception:
            # Untyped (a store driver's own error, Temporal's RPC errors):
            # the runtime gave the delivery back, so a redelivery is applied.
            log.exception("vendor event %s of %s failed", event.kind, event.session_id)
            return _error(500, "internal")

    async def early(self, event: ProviderEvent) -> bool:
        """Whether a refused event came before its step was ready for it, so a redelivery may apply.

        The step is still starting the attempt the event is for, or has
        started it since the refusal (the refused delivery was not counted,
        so the redelivery is applied); when the session cannot be read now,
        the vendor is asked to deliver again rather than told it arrived.
        """
        try:
            session = await self.runtime.get(event.session_id)
            record = session.step(event.step_id)
        except (StoreUnavailableError, ConcurrentUpdateError):
            return True
        except MultiverifyError:
            return False
        return (
            not session.finished
            and record.state in (StepState.RUNNING, StepState.WAITING)
            and event.attempt in (None, record.attempt)
        )

    async def submit(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        step_id = request.path_params["step_id"]
        if self.authorize is not None and not await self.authorize(request, session_id):
            return _error(403, "forbidden")
        if not _is_json(request.headers.get("content-type")):
            # A browser sends a cross-site form (text/plain, form data)
            # without asking first, cookies and all; JSON it must ask for.
            return _error(415, "unsupported_media_type")
        try:
            body = await _body(request, self.max_body)
            payload = json.loads(body, parse_constant=_not_json, parse_float=_finite)
        except _TooLargeError:
            return _error(413, "too_large")
        except (ClientDisconnect, UnicodeDecodeError, ValueError, RecursionError):
            # RecursionError: nesting deeper than the JSON decoder can follow.
            return _error(400, "invalid_json")
        if not isinstance(payload, dict):
            return _error(400, "invalid_json")
        # The abuse controls count by the address the request came from,
        # never by one the caller claims.
        payload.pop("client_ip", None)
        client = self.client(request)
        if client is not None:
            payload["client_ip"] = client
        try:
            session = await self.runtime.submit(session_id, step_id, payload)
        except Exception as exc:
            refused = (
                _submit_error(exc, now=self.clock.now())
                if isinstance(exc, MultiverifyError)
                else None
            )
            if refused is None:
                log.exception("submission to %s of %s failed", step_id, session_id)
                return _error(500, "internal")
            return refused
        return JSONResponse(_step_view(session, step_id))


def create_app(
    runtime: Runtime,
    *,
    webhooks: Iterable[WebhookHandler] | Mapping[str, WebhookHandler] = (),
    public_base_url: str | None = None,
    trust_forwarded: bool = False,
    webhook_path: str = "/webhooks",
    submit_path: str | None = "/sessions/{session_id}/steps/{step_id}/submit",
    authorize: Callable[[Request, str], Awaitable[bool]] | None = None,
    on_rejected: Sequence[OnRejected] = (),
    clock: Clock | None = None,
    max_body: int = 1 << 20,
) -> Starlette:
    """The ASGI app that takes vendor webhooks and applicant codes for ``runtime``.

    Routes:

    - ``POST {webhook_path}/{vendor}`` for each handler (its
      [`vendor`][multiverify.webhooks.WebhookHandler.vendor], such as
      ``/webhooks/twilio-voice``): the signature is checked, the events go to
      their sessions, and the vendor gets the handler's answer (TwiML, NCCO
      or an empty success). Forged or unsigned: ``403``; signed but
      malformed: ``400``; neither says why (see ``on_rejected``). A
      repeated delivery, a callback for a finished session or one after its
      step ended is answered as a success, so the vendor stops retrying;
      the runtime records the late ones in the audit trail. A store
      conflict or outage, a vendor the channel could not reach, or a
      callback for a step still starting (or started since it was
      refused), gets ``503`` with ``Retry-After``, so the vendor delivers
      it again.
    - ``POST {submit_path}``: the applicant's input as a JSON object, such
      as ``{"code": "123456"}`` or ``{"action": "resend"}``, sent as
      ``application/json``. Answers the
      step's state, result and challenge (no personal data), or an error
      ``{"error": code}``: ``415`` another content type (so a cross-site
      form cannot post it), ``404`` no such session or step, ``409`` the
      session finished or the step does not wait, ``422`` invalid input
      (with ``field``), ``429`` an abuse limit (with ``quota``), ``503``
      (with ``Retry-After``) the store is down or the vendor checking the
      code cannot be reached. The caller's address is passed on as ``client_ip`` for
      the abuse controls. Put the lending app's own authentication in front
      of it, or pass ``authorize``.

    Args:
        runtime: the embedded [`Verifier`][multiverify.Verifier] or a
            [`TemporalVerifier`][multiverify.temporal.TemporalVerifier].
        webhooks: the handlers of the vendors the channels use, such as
            [`TwilioVoiceWebhook`][multiverify.webhooks.TwilioVoiceWebhook],
            each at ``{webhook_path}/{vendor}``; or a mapping of paths to
            handlers, for callback URLs already set up at a vendor.
        public_base_url: the public URL of this app's root as vendors call
            it; signatures cover the public URL, so set it behind a proxy.
            See [`public_url`][multiverify.asgi.public_url].
        trust_forwarded: read the ``X-Forwarded-*`` headers (only behind a
            proxy that sets them), for the public URL and the client address.
        webhook_path: where the vendor routes live.
        submit_path: the code-submission route, with ``{session_id}`` and
            ``{step_id}``; ``None`` leaves it out.
        authorize: called with the request and the session id before a
            submission; ``False`` refuses it with ``403``.
        on_rejected: hooks called with each refused callback.
        clock: the time source for ``received_at``.
        max_body: the largest body accepted, in bytes (``413`` beyond).

    Any other path is ``404 {"error": "not_found"}`` (a trailing slash is
    not redirected), another method ``405 {"error": "method_not_allowed"}``
    with ``Allow: POST``, and an error the runtime did not type ``500
    {"error": "internal"}`` (logged).

    Raises:
        ConfigurationError: two handlers share a route, or ``max_body`` is
            not a whole number of bytes above zero.
    """
    if type(max_body) is not int or max_body < 1:  # a bool is no byte count
        raise ConfigurationError(
            message=f"max_body must be a number of bytes above zero, not {max_body!r}"
        )
    app = _App(
        runtime,
        base_url=public_base_url,
        trust_forwarded=trust_forwarded,
        clock=clock if clock is not None else SystemClock(),
        on_rejected=on_rejected,
        authorize=authorize,
        max_body=max_body,
    )
    prefix = "/" + webhook_path.strip("/") if webhook_path.strip("/") else ""
    if isinstance(webhooks, Mapping):
        paths = [
            ("/" + path.lstrip("/"), handler) for path, handler in webhooks.items()
        ]
    else:
        paths = [(f"{prefix}/{handler.vendor}", handler) for handler in webhooks]
    routes: list[Route] = []
    seen: set[str] = set()
    for path, handler in paths:
        if path in seen:
            raise ConfigurationError(
                message=f"two webhook handlers would share the route {path}"
            )
        seen.add(path)
        routes.append(
            Route(
                path,
                _guarded(app.webhook(handler), path),
                methods=["POST"],
                name=f"webhook:{path}",
            )
        )
    if submit_path is not None:
        routes.append(
            Route(
                submit_path,
                _guarded(app.submit, submit_path),
                methods=["POST"],
                name="submit",
            )
        )
    starlette = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_error}
    )
    # A redirect to the path with or without a trailing slash would point at
    # the URL the app sees (behind a proxy, an internal one; or any Host the
    # caller sent), and a vendor's signature covers the path it called.
    starlette.router.redirect_slashes = False
    return starlette

"""Tests for the voice webhooks (Twilio, Vonage) on the sandbox vendor's signed callbacks: forgeries, duplicates, strays."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from multiverify import ResultStatus
from multiverify.exceptions import WebhookFormatError, WebhookSignatureError
from multiverify.providers import CallRoute, callback_url
from multiverify.sandbox._voice import CALLBACK_URL
from multiverify.webhooks import WebhookRequest

Build = Any  # the harness fixture of conftest.py


@pytest.mark.parametrize("vendor", ["twilio", "vonage"])
class TestVoiceWebhooks:
    async def test_forged_callback_is_rejected(
        self, harness: Build, vendor: str
    ) -> None:
        """A callback whose body was changed after signing is refused with a typed error."""
        h = harness(vendor)
        await h.run()
        request, _ = h.sandbox.callbacks[-1]
        forged = attrs.evolve(request, body=request.body + b"x")
        with pytest.raises(WebhookSignatureError):
            await h.sandbox.handler().parse(forged)

    async def test_unsigned_callback_is_rejected(
        self, harness: Build, vendor: str
    ) -> None:
        """A callback without its signature header is refused."""
        h = harness(vendor)
        await h.run()
        request, _ = h.sandbox.callbacks[0]
        with pytest.raises(WebhookSignatureError):
            await h.sandbox.handler().parse(attrs.evolve(request, headers={}))

    async def test_duplicates_change_nothing(self, harness: Build, vendor: str) -> None:
        """Every callback delivered again leaves the finished session as it was."""
        h = harness(vendor)
        session = await h.run()
        assert h.sandbox._deliver is not None
        for request, _ in list(h.sandbox.callbacks):
            response = await h.sandbox._deliver(request)
            assert response.status in (200, 204)
        assert await h.verifier.get(session.session_id) == session

    async def test_duplicate_answer_while_live_repeats_the_instruction(
        self, harness: Build, vendor: str
    ) -> None:
        """A repeated gather callback mid-call is answered with a way back to the current prompt."""
        h = harness(vendor)
        session = await h.verifier.start(h.applicant)
        # Let the call reach its second question, then replay the first answer.
        for _ in range(30):
            await h.settle()
            gathers = [r for r, _ in h.sandbox.callbacks if "event=gather" in r.url]
            if len(gathers) >= 2:
                break
            await h.clock.advance(0.1)
        first = next(r for r, _ in h.sandbox.callbacks if "event=gather" in r.url)
        assert h.sandbox._deliver is not None
        response = await h.sandbox._deliver(first)
        assert b"resume" in response.body
        done = await h.finish(session.session_id)
        assert done.step("call").result is not None
        assert done.step("call").result.status is ResultStatus.PASSED

    async def test_unknown_session_is_dropped(
        self, harness: Build, vendor: str
    ) -> None:
        """A well-signed callback for a session nobody has is dropped, and the call hung up."""
        h = harness(vendor)
        await h.run()
        request, _ = next(
            (r, resp) for r, resp in h.sandbox.callbacks if "event=answer" in r.url
        )
        route = CallRoute(session_id="nobody", step_id="call", attempt=1, call=1)
        key = None if vendor == "twilio" else "sandbox-vonage-callback-key"
        url = callback_url(CALLBACK_URL, route, "answer", key=key)
        h.sandbox.calls.clear()
        response = await h.sandbox._callback(url, _body(request, vendor))
        assert response.status == 200
        assert b"resume" in response.body or response.body == b"[]"

    async def test_status_callbacks_answer_empty(
        self, harness: Build, vendor: str
    ) -> None:
        """Status events are acknowledged with an empty 204."""
        h = harness(vendor)
        await h.run()
        statuses = [resp for r, resp in h.sandbox.callbacks if "event=status" in r.url]
        assert statuses
        assert all(resp.status == 204 for resp in statuses)

    async def test_a_url_without_a_route(self, harness: Build, vendor: str) -> None:
        """A signed callback to a URL with no route is a format error."""
        h = harness(vendor)
        await h.run()
        request, _ = h.sandbox.callbacks[0]
        url = CALLBACK_URL + "?event=status"
        if vendor == "vonage":
            from multiverify.providers._voice import _route_signature

            url += "&sig=" + _route_signature(
                "sandbox-vonage-callback-key", [("event", "status")]
            )
        bad = _resigned(h, request, url, vendor)
        with pytest.raises(WebhookFormatError):
            await h.sandbox.handler().parse(bad)


def _body(request: WebhookRequest, vendor: str) -> dict[str, Any]:
    if vendor == "twilio":
        return dict(request.form("twilio"))
    return request.json("vonage")


def _resigned(h: Any, request: WebhookRequest, url: str, vendor: str) -> WebhookRequest:
    """The same callback, signed again as the vendor would for ``url``."""
    from multiverify.sandbox._voice import TWILIO_TOKEN
    from multiverify.webhooks import twilio_signature

    if vendor == "twilio":
        params = request.form("twilio")
        headers = dict(request.headers)
        headers["x-twilio-signature"] = twilio_signature(TWILIO_TOKEN, url, params)
        return attrs.evolve(request, url=url, headers=headers)
    return attrs.evolve(request, url=url)


@pytest.mark.parametrize("vendor", ["twilio", "vonage"])
@pytest.mark.parametrize(
    "route",
    [
        CallRoute(session_id="x", step_id="nope", attempt=1, call=1),
        CallRoute(session_id="x", step_id="call", attempt=1, call=9),
    ],
    ids=["no-such-step", "another-call"],
)
async def test_a_route_that_does_not_fit_the_session_hangs_up(
    harness: Build, vendor: str, route: CallRoute
) -> None:
    """An applied answer whose route names another step or call gets a hang-up, not someone else's prompt."""
    h = harness(vendor)
    session = await h.run()
    route = attrs.evolve(route, session_id=session.session_id)
    key = None if vendor == "twilio" else "sandbox-vonage-callback-key"
    request, _ = h.sandbox.callbacks[0]
    request = attrs.evolve(
        request, url=callback_url(CALLBACK_URL, route, "answer", key=key)
    )
    response = h.sandbox.handler().respond(request, [session])
    assert response.status == 200
    if vendor == "twilio":
        assert b"<Hangup />" in response.body
        assert b"<Say" not in response.body
    else:
        assert response.body == b"[]"

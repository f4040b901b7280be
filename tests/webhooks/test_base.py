"""Tests for the raw webhook request and response values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from multiverify.exceptions import WebhookFormatError
from multiverify.webhooks import WebhookRequest, WebhookResponse

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def request(body: bytes, content_type: str = "") -> WebhookRequest:
    """A POST with the given body."""
    headers = {"Content-Type": content_type} if content_type else {}
    return WebhookRequest(
        method="POST",
        url="https://app.example/hook",
        headers=headers,
        body=body,
        received_at=T0,
    )


class TestWebhookRequest:
    def test_headers_are_case_insensitive(self) -> None:
        """Headers are found whatever their case."""
        req = WebhookRequest(
            method="POST",
            url="https://x/",
            headers={"X-Twilio-Signature": "abc"},
            received_at=T0,
        )

        assert req.header("x-twilio-signature") == "abc"
        assert req.header("X-TWILIO-SIGNATURE") == "abc"
        assert req.header("missing") is None

    def test_content_type_without_parameters(self) -> None:
        """The media type drops its parameters and case."""
        assert (
            request(b"", "Application/JSON; charset=utf-8").content_type
            == "application/json"
        )
        assert request(b"").content_type == ""

    def test_form_pairs_in_order(self) -> None:
        """Form bodies parse into pairs, repeated names and blanks kept."""
        req = request(b"Digits=12&Digits=34&Empty=&To=%2B8613800138000")

        assert req.form("twilio") == [
            ("Digits", "12"),
            ("Digits", "34"),
            ("Empty", ""),
            ("To", "+8613800138000"),
        ]
        assert request(b"").form("twilio") == []

    @pytest.mark.parametrize("body", [b"\xff\xfe", b"a=1&&&=", b"novalue"])
    def test_bad_form_is_a_format_error(self, body: bytes) -> None:
        """A body that is not form data is a WebhookFormatError naming the vendor."""
        with pytest.raises(WebhookFormatError) as info:
            request(body).form("twilio")

        assert info.value.vendor == "twilio"

    def test_form_of_more_fields_than_a_vendor_sends(self) -> None:
        """A form of more than 1000 fields (no vendor callback has a hundred) is refused before it is parsed, so a forged megabyte of fields costs no CPU to speak of."""
        assert len(request(b"&".join([b"a=1"] * 1000)).form("twilio")) == 1000
        with pytest.raises(WebhookFormatError, match="fields"):
            request(b"&".join([b"a=1"] * 1001)).form("twilio")

    def test_json_object(self) -> None:
        """A JSON object body parses."""
        assert request(b'{"a": [1, 2]}').json("veriff") == {"a": [1, 2]}

    @pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b'"text"', b"\xff"])
    def test_bad_json_is_a_format_error(self, body: bytes) -> None:
        """A body that is not a JSON object is a WebhookFormatError."""
        with pytest.raises(WebhookFormatError) as info:
            request(body).json("veriff")

        assert info.value.vendor == "veriff"

    @pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000])
    def test_deeply_nested_json_is_a_format_error(self, body: bytes) -> None:
        """JSON nested deeper than the decoder can follow is a WebhookFormatError."""
        with pytest.raises(WebhookFormatError) as info:
            request(body).json("veriff")

        assert info.value.vendor == "veriff"
        assert "nested too deeply" in str(info.value)

    def test_body_is_not_in_repr(self) -> None:
        """The raw body (personal data) stays out of the repr."""
        assert "secret-code" not in repr(request(b"code=secret-code"))


class TestWebhookResponse:
    def test_default_is_empty_204(self) -> None:
        """The default answer is an empty 204."""
        response = WebhookResponse()

        assert (response.status, response.body) == (204, b"")

"""Tests for bureau mappings: configuration mistakes, the template, field paths (with hypothesis)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from multiverify.exceptions import (
    ConfigurationError,
    ProviderResponseError,
)
from multiverify.providers import (
    BureauMapping,
    FileStatus,
    MatchResult,
    MatchRule,
    read_path,
    template_fields,
)

from .bureau import (
    BASE,
    CN_PATH,
    T0,
    TOKEN_URL,
    bureau,
    granted,
    read,
    request,
    sample,
)


class TestMappingConfiguration:
    @pytest.mark.parametrize(
        "build",
        [
            lambda: BureauMapping(report_id="a..b"),
            lambda: BureauMapping(report_id="a[x]"),
            lambda: BureauMapping(
                report_id="id", identity={"email": MatchRule(path="e", compare="$name")}
            ),
            lambda: BureauMapping(report_id="id", delinquencies={"days_15": "x"}),
            lambda: BureauMapping(report_id="id", required={"tradelines"}),
            lambda: BureauMapping(report_id="id", score_range=(850, 300)),
            lambda: MatchRule(path="x"),
            lambda: MatchRule(
                path="x", codes={"1": MatchResult.MATCH}, compare="$name"
            ),
            lambda: MatchRule(path="x", compare="$email"),
            lambda: MatchRule(path="x", compare="name"),
            lambda: MatchRule(path="x", compare="$name:%Y"),
        ],
    )
    def test_mistakes_are_configuration_errors(self, build: Any) -> None:
        """Malformed paths, unknown names and contradictory rules fail at construction."""
        with pytest.raises(ConfigurationError):
            build()

    def test_template_mistakes(self, client: httpx.AsyncClient) -> None:
        """A template naming an unknown field, or holding a non-JSON value, fails at construction."""
        with pytest.raises(ConfigurationError, match="unknown field"):
            bureau(client, template={"a": ["$nickname"]})
        with pytest.raises(ConfigurationError, match="not JSON"):
            bureau(client, template={"a": object()})

    async def test_literals_and_escapes(
        self, router: respx.Router, client: httpx.AsyncClient
    ) -> None:
        """Literal strings, numbers, booleans and nulls pass through; ``$$`` escapes a leading dollar."""
        router.post(TOKEN_URL).mock(return_value=granted())
        pull = router.post(BASE + CN_PATH).mock(
            return_value=httpx.Response(200, json=sample())
        )
        template = {
            "a": "$$5",
            "b": "plain",
            "c": [1, True, None],
            "d": "$date_of_birth",
        }
        await bureau(client, template=template).pull(request())
        assert json.loads(pull.calls.last.request.content) == {
            "a": "$5",
            "b": "plain",
            "c": [1, True, None],
            "d": "1990-03-07",
        }
        assert "national_id" in template_fields()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3)
    ),
    max_leaves=12,
)


class TestReadPath:
    @given(
        body=JSON,
        path=st.sampled_from(["a", "a.b", "a[0]", "a[*].b", "b[1].c[*]", "c[*][*]"]),
    )
    def test_never_raises_on_any_json(self, body: Any, path: str) -> None:
        """Any JSON and any valid path give a list of non-null values, never an error."""
        values = read_path(body, path)
        assert isinstance(values, list)
        assert None not in values

    @given(items=st.lists(st.integers(), max_size=6))
    def test_wildcard_takes_every_item(self, items: list[int]) -> None:
        """``[*]`` yields each item in order; ``[n]`` the n-th."""
        body = {"a": [{"b": item} for item in items]}
        assert read_path(body, "a[*].b") == items
        assert read_path(body, "a[0].b") == items[:1]

    @given(body=JSON)
    def test_any_answer_reads_or_fails_typed(self, body: Any) -> None:
        """Whatever a bureau sends, the mapping gives a report or a ProviderResponseError."""
        wrapped = {"data": body}
        with contextlib.suppress(ProviderResponseError):
            read(wrapped)


class TestMinimalMapping:
    def test_only_a_report_id(self) -> None:
        """A mapping reading nothing but the report id gives a bare hit with defaults."""
        mapping = BureauMapping(report_id="id", required=set())
        report = mapping.read(
            {"id": 7}, provider="p", preset="custom", request=request(), pulled_at=T0
        )
        assert (report.report_id, report.file) == ("7", FileStatus.HIT)
        assert report.identity.checked == ()
        assert (report.reason_codes, report.fraud_alerts, report.blacklist_hits) == (
            (),
            (),
            (),
        )
        assert not report.security_freeze
        assert report.normalised_score is None
        assert report.inquiries_within(30) is None

"""Tests for the shipped bureau presets, read against their sandbox fixtures and altered copies."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from multiverify.exceptions import (
    ConfigurationError,
    ProviderResponseError,
)
from multiverify.providers import (
    BUREAU_PRESETS,
    BureauReport,
    FileStatus,
    MatchResult,
    bureau_preset,
)

from .bureau import (
    read,
    sample,
)


class TestPresets:
    def test_cn_fixture(self) -> None:
        """The CN fixture reads as a clean hit: three elements and the birth date matched."""
        report = read(sample())
        assert report.file is FileStatus.HIT
        assert report.identity.matched == (
            "name",
            "national_id",
            "date_of_birth",
            "phone",
        )
        assert (report.score, report.score_model) == (712, "GW-CREDIT-2")
        assert report.reason_codes == ("R04", "R11", "R17")
        assert [(i.days, i.count) for i in report.inquiries] == [
            (7, 0),
            (30, 1),
            (90, 2),
        ]
        assert report.normalised_score == pytest.approx(412 / 650)
        assert not report.fraud_alerts
        assert not report.security_freeze

    def test_us_fixture(self) -> None:
        """The US fixture: FICO 9 at 742, factor codes, inquiries counted by date, a 30-day late."""
        report = read(sample("us-credit-profile"), preset="us-credit-profile")
        assert report.report_id.startswith("rrt-")
        assert report.file is FileStatus.HIT
        assert report.identity.mismatched == ()
        assert len(report.identity.matched) == 4
        assert (report.score, report.score_model) == (742, "FICO Score 9")
        assert report.reason_codes == ("14", "10", "05", "18")
        # 10062025 is 120 days before the pull, 04112025 is 298 days before.
        assert report.inquiries_within(90) == 0
        assert report.inquiries_within(180) == 1
        assert report.inquiries_within(365) == 2
        assert report.delinquencies.days_30 == 1
        assert report.delinquencies.at_least(60) == 0
        assert report.blacklist_hits == ()

    @pytest.mark.parametrize(
        ("sub_code", "name", "national_id", "phone"),
        [
            ("202", "match", "no_match", "partial"),
            ("203", "no_match", "match", "partial"),
            ("201", "no_match", "no_match", "no_match"),
        ],
    )
    def test_cn_three_element_codes(
        self, sub_code: str, name: str, national_id: str, phone: str
    ) -> None:
        """Mobile3Meta sub-codes say which element failed."""
        body = sample()
        body["data"]["identity"]["subCode"] = sub_code
        identity = read(body).identity
        assert (identity.name, identity.national_id, identity.phone) == (
            MatchResult(name),
            MatchResult(national_id),
            MatchResult(phone),
        )

    def test_us_on_file_values_compared(self) -> None:
        """Another SSN and birth date on file: those elements do not match."""
        body = sample("us-credit-profile")
        body["creditProfile"][0]["ssn"][0]["number"] = "666123450"
        body["creditProfile"][0]["consumerIdentity"]["dob"]["dob"] = "01161980"
        identity = read(body, preset="us-credit-profile").identity
        assert identity.mismatched == ("national_id", "date_of_birth")
        assert identity.matched == ("name", "phone")

    def test_us_alerts_freeze_blacklist_no_hit(self) -> None:
        """Alert statement codes, the freeze message and an OFAC hit are read; no consumerIdentity is a no hit."""
        body = sample("us-credit-profile")
        profile = body["creditProfile"][0]
        profile["statement"] = [{"type": "26"}, {"type": "99"}]
        profile["informationalMessage"] = [{"messageNumber": "57"}]
        profile["ofac"] = {"messageNumber": "01"}
        report = read(body, preset="us-credit-profile")
        assert report.fraud_alerts == ("extended_fraud_alert",)
        assert report.security_freeze
        assert report.blacklist_hits == ("ofac_sdn",)
        empty = {"requestId": "rrt-1", "creditProfile": [{"informationalMessage": []}]}
        assert read(empty, preset="us-credit-profile").file is FileStatus.NO_HIT

    def test_thin_file_needs_no_score(self) -> None:
        """Fewer accounts than ``thin_file_below`` is a thin file, which may lack a score."""
        body = sample("us-credit-profile")
        body["creditProfile"][0]["tradeline"] = body["creditProfile"][0]["tradeline"][
            :2
        ]
        body["creditProfile"][0]["riskModel"] = []
        report = read(body, preset="us-credit-profile")
        assert report.file is FileStatus.THIN_FILE
        assert report.score is None

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            (lambda d: d["data"].pop("reportNo"), "data.reportNo"),
            (lambda d: d["data"].pop("recordStatus"), "data.recordStatus"),
            (lambda d: d["data"]["score"].pop("value"), "data.score.value"),
            (lambda d: d["data"].pop("identity"), "identity"),
            (lambda d: d["data"]["inquiries"].pop("m1"), "data.inquiries.m1"),
            (lambda d: d["data"].update(recordStatus="MAYBE"), "data.recordStatus"),
            (
                lambda d: d["data"]["identity"].update(subCode="999"),
                "data.identity.subCode",
            ),
            (lambda d: d["data"]["score"].update(value="high"), "data.score.value"),
            (lambda d: d["data"]["score"].update(value=True), "data.score.value"),
            (lambda d: d["data"].update(frozen="no"), "data.frozen"),
            (lambda d: d["data"]["overdue"].update(m1=-1), "data.overdue.m1"),
            (lambda d: d["data"].update(reportNo={"id": 1}), "data.reportNo"),
            (lambda d: d["data"].update(reportNo="  "), "data.reportNo"),
            (
                lambda d: d["data"]["score"].update(reasons=[{"c": 1}]),
                "data.score.reasons[*]",
            ),
        ],
    )
    def test_partial_or_malformed_answers(self, change: Any, field: str) -> None:
        """A missing required field, a wrong type or an unknown code: ProviderResponseError naming it."""
        body = copy.deepcopy(sample())
        change(body)
        with pytest.raises(ProviderResponseError) as caught:
            read(body)
        assert caught.value.field == field

    def test_a_no_hit_may_be_sparse(self) -> None:
        """A no hit needs only its report id and status."""
        report = read({"data": {"reportNo": "R1", "recordStatus": "NOT_FOUND"}})
        assert report.file is FileStatus.NO_HIT
        assert report.identity.checked == ()

    def test_bad_inquiry_date(self) -> None:
        """An inquiry date not in the preset's format is a ProviderResponseError."""
        body = sample("us-credit-profile")
        body["creditProfile"][0]["inquiry"] = [{"date": "2025-10-06"}]
        with pytest.raises(ProviderResponseError, match="a date as %m%d%Y"):
            read(body, preset="us-credit-profile")

    def test_report_round_trip_and_repr(self) -> None:
        """A report survives to_data/from_data; its repr shows no score, codes or full id."""
        report = read(sample("us-credit-profile"), preset="us-credit-profile")
        assert BureauReport.from_data(report.to_data()) == report
        text = repr(report)
        assert "742" not in text
        assert report.report_id not in text
        assert "FICO" not in text
        with pytest.raises(ProviderResponseError):
            BureauReport.from_data({"provider": "b"})

    def test_unknown_preset(self) -> None:
        """An unknown preset name is a ConfigurationError listing the known ones."""
        with pytest.raises(ConfigurationError, match="cn-credit-gateway"):
            bureau_preset("nope")
        assert set(BUREAU_PRESETS) == {"us-credit-profile", "cn-credit-gateway"}


def test_a_preset_of_your_own() -> None:
    """A preset built by the app needs no fixture; asking for its sample is a ConfigurationError."""
    import attrs

    mine = attrs.evolve(bureau_preset("cn-credit-gateway"), name="mine", fixture=None)
    with pytest.raises(ConfigurationError, match="no fixture"):
        mine.sample()

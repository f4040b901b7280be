"""The shipped bureau layouts: endpoint, request template, response mapping and a sandbox fixture each.

Sources are cited beside each preset and in the credit-bureau guide.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import attrs

from ..exceptions import ConfigurationError
from ._bureau import FileStatus, MatchResult
from ._bureau_mapping import BureauMapping, MatchRule, check_template

__all__ = ["BUREAU_PRESETS", "BureauPreset", "bureau_preset"]


@attrs.frozen(kw_only=True)
class BureauPreset:
    """A bureau layout: where to POST, what to send, how to read the answer, and a sandbox fixture.

    Attributes:
        name: the preset's name.
        description: one line on the layout and its source.
        path: the report endpoint, relative to the base URL.
        template: the request body ([`template_fields`][multiverify.providers.template_fields]).
        mapping: how the answer is read.
        fixture: the sandbox answer's file name among the package's
            ``bureau_fixtures``; ``None`` for a preset of your own.
    """

    name: str
    description: str
    path: str
    template: Mapping[str, Any]
    mapping: BureauMapping
    fixture: str | None = None

    def __attrs_post_init__(self) -> None:
        check_template(self.template, self.name)

    def sample(self) -> dict[str, Any]:
        """The preset's sandbox answer: a clean file, as the bureau would send it.

        Raises:
            ConfigurationError: the preset has no fixture.
        """
        if self.fixture is None:
            raise ConfigurationError(message=f"preset {self.name!r} has no fixture")
        text = resources.files(__package__).joinpath("bureau_fixtures", self.fixture)
        data: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
        return data


_MATCH = MatchResult.MATCH
_NO_MATCH = MatchResult.NO_MATCH

# US layout: Experian's Consumer Credit Profile API v2 (``POST
# /consumerservices/credit-profile/v2/credit-report``). Request members
# consumerPii / requestor / permissiblePurpose / addOns, and response
# members creditProfile[].riskModel[] {modelIndicator, score (4 characters),
# scoreFactors[] {importance, code}}, fraudShield[] {fraudShieldIndicators
# {indicator[]}}, inquiry[] {date MMDDCCYY, subscriberName, type},
# informationalMessage[] {messageNumber, messageText}, statement[] {type,
# statementText}, tradeline[] {delinquencies30Days, delinquencies60Days,
# delinquencies90to180Days}, publicRecord[], ofac, consumerIdentity {name[],
# dob, phone[]} and ssn[] come from the OpenAPI description of Experian's
# sandbox (developer.experian.com, "Consumer Credit Profile"). The answer
# carries no hit indicator: a file is there when consumerIdentity is, and
# the pull's id is requestId. Which codes
# mean what (fraud-shield indicators, statement types, the informational
# message of a frozen file, model indicators) is in Experian's subscriber
# manuals, not in the public description: the codes below are this
# preset's configuration and are to be checked against the lender's own
# manual (override them with attrs.evolve).
US_CREDIT_PROFILE = BureauPreset(
    name="us-credit-profile",
    description="Experian Consumer Credit Profile v2 layout (US): FICO-style score, "
    "Fraud Shield, inquiries by date",
    path="/consumerservices/credit-profile/v2/credit-report",
    template={
        "consumerPii": {
            "primaryApplicant": {
                "name": {"firstName": "$first_name", "lastName": "$last_name"},
                "dob": {"dob": "$date_of_birth:%m%d%Y"},
                "ssn": {"ssn": "$national_id"},
                "phone": [{"number": "$phone_national", "type": "M"}],
            }
        },
        "permissiblePurpose": {"type": "$purpose"},
        "addOns": {"riskModels": {"modelIndicator": ["F9"]}, "fraudShield": "Y"},
        "clientReferenceId": "$reference",
    },
    mapping=BureauMapping(
        report_id="requestId",
        hit_marker="creditProfile[0].consumerIdentity",
        tradelines="creditProfile[0].tradeline[*]",
        thin_file_below=3,
        identity={
            "name": MatchRule(
                path="creditProfile[0].consumerIdentity.name[*].surname",
                compare="$last_name",
            ),
            "national_id": MatchRule(
                path="creditProfile[0].ssn[*].number", compare="$national_id"
            ),
            "date_of_birth": MatchRule(
                path="creditProfile[0].consumerIdentity.dob.dob",
                compare="$date_of_birth:%m%d%Y",
            ),
            "phone": MatchRule(
                path="creditProfile[0].consumerIdentity.phone[*].number",
                compare="$phone_national",
            ),
        },
        score="creditProfile[0].riskModel[0].score",
        score_model="creditProfile[0].riskModel[0].modelIndicator",
        score_models={"F9": "FICO Score 9", "V4": "VantageScore 4.0"},
        score_range=(300, 850),
        reason_codes="creditProfile[0].riskModel[0].scoreFactors[*].code",
        fraud_alerts="creditProfile[0].statement[*].type",
        fraud_alert_codes={
            "25": "initial_fraud_alert",
            "26": "extended_fraud_alert",
            "27": "active_duty_alert",
        },
        security_freeze="creditProfile[0].informationalMessage[*].messageNumber",
        freeze_codes={"57"},
        blacklist="creditProfile[0].ofac.messageNumber",
        blacklist_codes={"01": "ofac_sdn"},
        inquiry_dates="creditProfile[0].inquiry[*].date",
        inquiry_date_format="%m%d%Y",
        inquiry_windows=(30, 90, 180, 365),
        delinquencies={
            "days_30": "creditProfile[0].tradeline[*].delinquencies30Days",
            "days_60": "creditProfile[0].tradeline[*].delinquencies60Days",
            "days_90_plus": "creditProfile[0].tradeline[*].delinquencies90to180Days",
            "derogatory": "creditProfile[0].publicRecord[*]",
        },
        required=frozenset({"score", "identity"}),
    ),
    fixture="us-credit-profile.json",
)

# China layout: a credit-data gateway's answer. The three-element check
# (name, ID number, mobile) reads Alibaba Cloud's Mobile3MetaVerify codes
# (https://www.alibabacloud.com/help/zh/ekyc/latest/wko0wqqd2gepvbtq:
# BizCode 1 consistent, 2 inconsistent, 3 no record; SubCode 101 all
# consistent, 201 phone matches neither name nor ID, 202 phone and name
# consistent but not the ID, 203 phone and ID consistent but not the name);
# Tencent Cloud's PhoneVerification reports the same cases
# (https://cloud.tencent.com/document/api/1007/39765). Inquiries are counted
# in the 7-day, 1-month and 3-month windows Chinese multi-lender ("多头")
# products report, and the special list (失信被执行人, 欺诈, 逾期 lists)
# comes back as categories. The report layout of the PBOC Credit Reference
# Center and of Baihang is not public: the remaining member names are this
# preset's own.
CN_CREDIT_GATEWAY = BureauPreset(
    name="cn-credit-gateway",
    description="Chinese credit-data gateway layout: the three-element check with "
    "Mobile3Meta sub-codes, special lists, multi-lender inquiries (7d/30d/90d)",
    path="/v1/credit/reports",
    template={
        "name": "$name",
        "idCard": "$national_id",
        "mobile": "$phone_national",
        "queryReason": "$purpose",
        "authorizationId": "$consent",
        "requestNo": "$reference",
    },
    mapping=BureauMapping(
        report_id="data.reportNo",
        file_status="data.recordStatus",
        file_codes={
            "FOUND": FileStatus.HIT,
            "NOT_FOUND": FileStatus.NO_HIT,
            "THIN": FileStatus.THIN_FILE,
        },
        identity={
            "name": MatchRule(
                path="data.identity.subCode",
                codes={
                    "101": _MATCH,
                    "201": _NO_MATCH,
                    "202": _MATCH,
                    "203": _NO_MATCH,
                },
            ),
            "national_id": MatchRule(
                path="data.identity.subCode",
                codes={
                    "101": _MATCH,
                    "201": _NO_MATCH,
                    "202": _NO_MATCH,
                    "203": _MATCH,
                },
            ),
            "phone": MatchRule(
                path="data.identity.subCode",
                codes={
                    "101": _MATCH,
                    "201": _NO_MATCH,
                    "202": MatchResult.PARTIAL,
                    "203": MatchResult.PARTIAL,
                },
            ),
            "date_of_birth": MatchRule(
                path="data.identity.birthDate", compare="$date_of_birth:%Y%m%d"
            ),
        },
        score="data.score.value",
        score_model="data.score.model",
        score_range=(300, 950),
        reason_codes="data.score.reasons[*]",
        fraud_alerts="data.alerts[*].type",
        security_freeze="data.frozen",
        blacklist="data.specialList[*].category",
        inquiries={
            7: "data.inquiries.d7",
            30: "data.inquiries.m1",
            90: "data.inquiries.m3",
        },
        delinquencies={
            "days_30": "data.overdue.m1",
            "days_60": "data.overdue.m2",
            "days_90_plus": "data.overdue.m3plus",
            "derogatory": "data.overdue.badDebt",
        },
        required=frozenset({"file_status", "score", "identity", "inquiries"}),
    ),
    fixture="cn-credit-gateway.json",
)

BUREAU_PRESETS: Mapping[str, BureauPreset] = {
    preset.name: preset for preset in (US_CREDIT_PROFILE, CN_CREDIT_GATEWAY)
}
"""The shipped layouts by name: ``us-credit-profile`` and ``cn-credit-gateway``."""


def bureau_preset(name: str) -> BureauPreset:
    """A shipped preset by name.

    Raises:
        ConfigurationError: no preset has this name.
    """
    try:
        return BUREAU_PRESETS[name]
    except KeyError:
        raise ConfigurationError(
            message=f"no bureau preset named {name!r} (known: {', '.join(BUREAU_PRESETS)})"
        ) from None

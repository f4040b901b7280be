"""The credit-bureau capability: pull one report for an applicant, as a typed, masked value.

A [`BureauProvider`][multiverify.providers.BureauProvider] turns a
[`BureauRequest`][multiverify.providers.BureauRequest] into a
[`BureauReport`][multiverify.providers.BureauReport]: what the bureau found
(hit, no hit, thin file), how the applicant's identity matched its file
(name, national ID, date of birth, phone: the three-element check and the
birth date), the score with its model and reason codes, fraud alerts and
freezes, blacklist hits, recent inquiries and delinquencies. The report
holds no personal data from the file (no names, numbers or addresses),
only match results, codes and counts, and its ``repr`` shows none of it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

import attrs

from .._applicant import Applicant
from .._masking import mask_id
from ..exceptions import ProviderResponseError

__all__ = [
    "BureauProvider",
    "BureauReport",
    "BureauRequest",
    "Delinquencies",
    "FileStatus",
    "IdentityMatch",
    "InquiryCount",
    "MatchResult",
]

IDENTITY_FIELDS = ("name", "national_id", "date_of_birth", "phone")
"""The identity elements a bureau checks, in report order."""


class FileStatus(enum.StrEnum):
    """What the bureau found for the applicant."""

    HIT = "hit"
    NO_HIT = "no_hit"
    THIN_FILE = "thin_file"


class MatchResult(enum.StrEnum):
    """How one identity element matched the bureau's file."""

    MATCH = "match"
    PARTIAL = "partial"
    NO_MATCH = "no_match"
    NOT_CHECKED = "not_checked"


@attrs.frozen(kw_only=True)
class IdentityMatch:
    """The identity check: name, national ID and phone (the three-element check), and the birth date."""

    name: MatchResult = attrs.field(
        default=MatchResult.NOT_CHECKED, converter=MatchResult
    )
    national_id: MatchResult = attrs.field(
        default=MatchResult.NOT_CHECKED, converter=MatchResult
    )
    date_of_birth: MatchResult = attrs.field(
        default=MatchResult.NOT_CHECKED, converter=MatchResult
    )
    phone: MatchResult = attrs.field(
        default=MatchResult.NOT_CHECKED, converter=MatchResult
    )

    def fields_with(self, result: MatchResult) -> tuple[str, ...]:
        """The elements with this result, in report order."""
        return tuple(name for name in IDENTITY_FIELDS if getattr(self, name) is result)

    @property
    def matched(self) -> tuple[str, ...]:
        """The elements that matched."""
        return self.fields_with(MatchResult.MATCH)

    @property
    def mismatched(self) -> tuple[str, ...]:
        """The elements that did not match."""
        return self.fields_with(MatchResult.NO_MATCH)

    @property
    def checked(self) -> tuple[str, ...]:
        """The elements the bureau checked."""
        return tuple(
            name
            for name in IDENTITY_FIELDS
            if getattr(self, name) is not MatchResult.NOT_CHECKED
        )


@attrs.frozen(kw_only=True)
class InquiryCount:
    """How many lenders asked the bureau about the applicant within a window.

    Attributes:
        days: the window, in days before the pull (7, 30, 90, 180, 365...).
        count: hard inquiries within it.
    """

    days: int
    count: int


@attrs.frozen(kw_only=True)
class Delinquencies:
    """Late payments on file, by how late, and derogatory records."""

    days_30: int = 0
    days_60: int = 0
    days_90_plus: int = 0
    derogatory: int = 0
    """Collections, charge-offs and public records (bankruptcies, judgments)."""

    def at_least(self, days: int) -> int:
        """Delinquencies at least ``days`` late (30, 60 or 90), derogatory records included."""
        counts = ((30, self.days_30), (60, self.days_60), (90, self.days_90_plus))
        return self.derogatory + sum(n for late, n in counts if late >= days)


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _inquiries(values: Iterable[InquiryCount]) -> tuple[InquiryCount, ...]:
    return tuple(sorted(values, key=lambda item: item.days))


@attrs.frozen(kw_only=True)
class BureauReport:
    """A credit report, normalised: findings, codes and counts, never the file's personal data.

    The ``repr`` shows only the provider, preset, a masked report id and
    the file status, so a report in a log line or traceback gives nothing
    away.

    Attributes:
        provider: the provider that pulled it.
        preset: the response mapping it was read with.
        report_id: the bureau's id for the report.
        file: hit, no hit or thin file.
        identity: how each identity element matched the file.
        score: the bureau's score, if it gave one.
        score_model: the score's model, such as ``FICO 8``.
        score_range: the model's lowest and highest score.
        reason_codes: the score's reason codes, most important first.
        fraud_alerts: fraud alerts on file, by type.
        security_freeze: whether the file is frozen.
        blacklist_hits: the lists or categories the applicant is on.
        inquiries: recent inquiries, by window.
        delinquencies: late payments and derogatory records.
        pulled_at: when the report was pulled.
    """

    provider: str
    preset: str
    report_id: str = attrs.field(repr=mask_id)
    file: FileStatus = attrs.field(converter=FileStatus)
    identity: IdentityMatch = attrs.field(factory=IdentityMatch, repr=False)
    score: int | None = attrs.field(default=None, repr=False)
    score_model: str | None = attrs.field(default=None, repr=False)
    score_range: tuple[int, int] | None = attrs.field(default=None, repr=False)
    reason_codes: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, repr=False
    )
    fraud_alerts: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, repr=False
    )
    security_freeze: bool = attrs.field(default=False, repr=False)
    blacklist_hits: tuple[str, ...] = attrs.field(
        default=(), converter=_strings, repr=False
    )
    inquiries: tuple[InquiryCount, ...] = attrs.field(
        default=(), converter=_inquiries, repr=False
    )
    delinquencies: Delinquencies = attrs.field(factory=Delinquencies, repr=False)
    pulled_at: datetime | None = attrs.field(default=None, repr=False)

    def inquiries_within(self, days: int) -> int | None:
        """Inquiries within ``days``, when the report counts that window."""
        return next((i.count for i in self.inquiries if i.days == days), None)

    @property
    def normalised_score(self) -> float | None:
        """The score placed in ``[0, 1]`` on its model's range, when both are known."""
        if self.score is None or self.score_range is None:
            return None
        low, high = self.score_range
        return min(max((self.score - low) / (high - low), 0.0), 1.0)

    def to_data(self) -> dict[str, Any]:
        """The report as plain JSON values (what the shared store keeps for reuse)."""
        return {
            "provider": self.provider,
            "preset": self.preset,
            "report_id": self.report_id,
            "file": self.file.value,
            "identity": {n: getattr(self.identity, n).value for n in IDENTITY_FIELDS},
            "score": self.score,
            "score_model": self.score_model,
            "score_range": None if self.score_range is None else list(self.score_range),
            "reason_codes": list(self.reason_codes),
            "fraud_alerts": list(self.fraud_alerts),
            "security_freeze": self.security_freeze,
            "blacklist_hits": list(self.blacklist_hits),
            "inquiries": {str(i.days): i.count for i in self.inquiries},
            "delinquencies": attrs.asdict(self.delinquencies),
            "pulled_at": None if self.pulled_at is None else self.pulled_at.isoformat(),
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> BureauReport:
        """Read back [`to_data`][multiverify.providers.BureauReport.to_data].

        Raises:
            ProviderResponseError: the data is not a stored report.
        """
        try:
            score_range = data["score_range"]
            pulled = data["pulled_at"]
            return cls(
                provider=data["provider"],
                preset=data["preset"],
                report_id=data["report_id"],
                file=data["file"],
                identity=IdentityMatch(**data["identity"]),
                score=data["score"],
                score_model=data["score_model"],
                score_range=None if score_range is None else tuple(score_range),
                reason_codes=data["reason_codes"],
                fraud_alerts=data["fraud_alerts"],
                security_freeze=bool(data["security_freeze"]),
                blacklist_hits=data["blacklist_hits"],
                inquiries=[
                    InquiryCount(days=int(days), count=int(count))
                    for days, count in data["inquiries"].items()
                ],
                delinquencies=Delinquencies(**data["delinquencies"]),
                pulled_at=None if pulled is None else datetime.fromisoformat(pulled),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProviderResponseError(
                message=f"not a stored bureau report: {type(exc).__name__}",
                provider=str(data.get("provider", "")),
                field="report",
            ) from None


@attrs.frozen(kw_only=True)
class BureauRequest:
    """One pull, as the channel asks for it after its guards passed.

    Attributes:
        reference: the attempt's idempotency key (``session:step:attempt``),
            sent so a retried pull is not a second inquiry on the file.
        applicant: who the report is about; personal, left out of repr.
        purpose: the permissible purpose, such as ``credit_transaction``.
        consent: the reference of the consent record that allows the pull.
    """

    reference: str
    applicant: Applicant = attrs.field(repr=False)
    purpose: str
    consent: str


class BureauProvider(Protocol):
    """**Protocol**: a credit bureau that pulls one report per request.

    Added in 0.1.
    """

    @property
    def name(self) -> str:
        """The provider's name, as policies list it."""
        ...

    async def pull(self, request: BureauRequest, /) -> BureauReport:
        """Pull and normalise one report.

        Raises:
            ProviderError: the bureau refused or could not be reached;
                [`ProviderResponseError`][multiverify.exceptions.ProviderResponseError]
                when its answer is malformed or lacks a required field.
            InvalidInputError: the applicant lacks a field the request needs.
        """
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (an HTTP client it made)."""
        ...

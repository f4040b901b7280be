"""A configurable HTTP JSON bureau: OAuth2, a request template, and a response mapping by field paths.

No bureau publishes an open consumer-credit API with test vectors (the
survey in the research notes: Experian, Equifax and TransUnion need a
contract and granted credentials). What they share is plain HTTP: an
OAuth2 token (RFC 6749 §4.4 client credentials, or §4.3 the resource-owner
password grant Experian's developer platform uses,
https://developer.experian.com/tutorials/oauth-20-tutorial), then a JSON
POST per report with ``Authorization: Bearer`` (RFC 6750 §2.1). So one
adapter serves them all:

- **token**: requested with ``application/x-www-form-urlencoded`` and the
  client authenticated by HTTP Basic (RFC 6749 §2.3.1) or in the body;
  cached until ``expires_in`` (§5.1) minus a skew, and fetched again once
  when a pull answers 401 (RFC 6750 §3.1 ``invalid_token``).
- **request**: a JSON template whose ``"$name"``-style strings are filled
  from the applicant and the pull ([`template_fields`][multiverify.providers.template_fields]).
- **response**: a [`BureauMapping`][multiverify.providers.BureauMapping]
  of field paths (``creditProfile[0].riskModel[*].score``) into a
  [`BureauReport`][multiverify.providers.BureauReport].
- **idempotency**: the attempt's key goes out in a header
  (``Idempotency-Key`` by default), so a retried pull is not a second
  inquiry on the applicant's file.

[`BUREAU_PRESETS`][multiverify.providers.BUREAU_PRESETS] ship two layouts,
each with a sandbox fixture in the package; the guide documents their sources.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Literal
from urllib.parse import quote

import attrs
import httpx
import phonenumbers

from .._applicant import Applicant
from .._clock import Clock, SystemClock
from .._http import error_for_response, exchange
from ..exceptions import (
    ConfigurationError,
    InvalidInputError,
    ProviderAuthError,
    ProviderResponseError,
    PullNotPermittedError,
)
from ._bureau import (
    IDENTITY_FIELDS,
    BureauReport,
    BureauRequest,
    Delinquencies,
    FileStatus,
    IdentityMatch,
    InquiryCount,
    MatchResult,
)

__all__ = [
    "BUREAU_PRESETS",
    "BureauMapping",
    "BureauPreset",
    "HttpBureau",
    "MatchRule",
    "OAuth2Token",
    "bureau_preset",
    "read_path",
    "template_fields",
]

# -- field paths -------------------------------------------------------------------

_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[(?:\d+|\*)\])*)")
_INDEX = re.compile(r"\[(\d+|\*)\]")


def _parse_path(path: str) -> tuple[str | int, ...]:
    """``a.b[0].c[*]`` as ``("a", "b", 0, "c", "*")``; ``ConfigurationError`` if malformed."""
    steps: list[str | int] = []
    for part in path.split("."):
        match = _SEGMENT.fullmatch(part)
        if not path or match is None:
            raise ConfigurationError(message=f"not a field path: {path!r}")
        steps.append(match.group(1))
        steps.extend(
            "*" if index == "*" else int(index)
            for index in _INDEX.findall(match.group(2))
        )
    return tuple(steps)


def read_path(data: Any, path: str) -> list[Any]:
    """Every value at a field path: ``[0]`` indexes a list, ``[*]`` takes each item.

    A missing key or index gives no value; ``null`` values are left out.

    >>> read_path({"a": [{"b": 1}, {"b": 2}, {}]}, "a[*].b")
    [1, 2]
    >>> read_path({"a": {"b": None}}, "a.b")
    []

    Raises:
        ConfigurationError: the path is malformed.
    """
    found = [data]
    for step in _parse_path(path):
        nxt: list[Any] = []
        for value in found:
            if step == "*":
                if isinstance(value, list):
                    nxt.extend(value)
            elif isinstance(step, int):
                if isinstance(value, list) and -len(value) <= step < len(value):
                    nxt.append(value[step])
            elif isinstance(value, Mapping) and step in value:
                nxt.append(value[step])
        found = nxt
    return [value for value in found if value is not None]


# -- the request template --------------------------------------------------------------


def _split_name(applicant: Applicant) -> tuple[str, str]:
    words = applicant.name.split()
    return " ".join(words[:-1]) or words[-1], words[-1]


def _address(applicant: Applicant, part: str) -> str:
    address = applicant.address
    if address is None:
        raise InvalidInputError(
            message="address: the bureau's request needs the applicant's address",
            field="address",
        )
    if part == "line1":
        return address.lines[0] if address.lines else ""
    if part == "lines":
        return ", ".join(address.lines)
    value: str = getattr(address, part)
    return value


def _phone_national(applicant: Applicant) -> str:
    return str(phonenumbers.parse(applicant.phone).national_number)


_FIELDS: dict[str, Any] = {
    "applicant_id": lambda a, _: a.applicant_id,
    "name": lambda a, _: a.name,
    "first_name": lambda a, _: _split_name(a)[0],
    "last_name": lambda a, _: _split_name(a)[1],
    "national_id": lambda a, _: a.national_id,
    "phone": lambda a, _: a.phone,
    "phone_national": lambda a, _: _phone_national(a),
    "date_of_birth": lambda a, _: a.date_of_birth.isoformat(),
    "address.line1": lambda a, _: _address(a, "line1"),
    "address.lines": lambda a, _: _address(a, "lines"),
    "address.city": lambda a, _: _address(a, "city"),
    "address.region": lambda a, _: _address(a, "region"),
    "address.postal_code": lambda a, _: _address(a, "postal_code"),
    "address.country": lambda a, _: _address(a, "country"),
    "purpose": lambda _, r: r.purpose,
    "consent": lambda _, r: r.consent,
    "reference": lambda _, r: r.reference,
}


def template_fields() -> tuple[str, ...]:
    """The names a request template may use as ``"$name"`` (``"$date_of_birth:%m%d%Y"`` takes a format).

    >>> "national_id" in template_fields()
    True
    """
    return tuple(_FIELDS)


def _reference(text: str) -> tuple[str, str | None] | None:
    """``"$name"`` or ``"$date_of_birth:%Y%m%d"`` as (name, format); ``None`` for a literal."""
    if not text.startswith("$") or text.startswith("$$"):
        return None
    name, _, fmt = text[1:].partition(":")
    return name, fmt or None


def _check_template(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_template(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_template(item, f"{where}[{index}]")
    elif isinstance(value, str):
        ref = _reference(value)
        if ref is None:
            return
        name, fmt = ref
        if name not in _FIELDS:
            raise ConfigurationError(
                message=f"request template {where}: unknown field ${name} "
                f"(known: {', '.join(_FIELDS)})"
            )
        if fmt is not None and name != "date_of_birth":
            raise ConfigurationError(
                message=f"request template {where}: only $date_of_birth takes a format"
            )
    elif value is not None and not isinstance(value, bool | int | float):
        raise ConfigurationError(
            message=f"request template {where}: {type(value).__name__} is not JSON"
        )


def _fill(value: Any, applicant: Applicant, request: BureauRequest) -> Any:
    if isinstance(value, Mapping):
        return {k: _fill(v, applicant, request) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, applicant, request) for v in value]
    if isinstance(value, str):
        ref = _reference(value)
        if ref is None:
            return value[1:] if value.startswith("$$") else value
        name, fmt = ref
        if name == "date_of_birth" and fmt is not None:
            return applicant.date_of_birth.strftime(fmt)
        return _FIELDS[name](applicant, request)
    return value


# -- the response mapping ---------------------------------------------------------------


def _fold(text: str) -> str:
    """Compare names, numbers and dates without case, spaces, punctuation or width."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in folded if ch.isalnum())


def _codes(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


def _check_path(path: str | None) -> None:
    if path is not None:
        _parse_path(path)


@attrs.frozen(kw_only=True)
class MatchRule:
    """How one identity element's result is read from the response.

    Either ``codes`` maps the bureau's verdict at ``path`` to a result, or
    ``compare`` names the applicant's value (a template field such as
    ``"$last_name"``) to compare with the value on file at ``path``: any
    equal value (case, spaces and punctuation aside) is a match. Nothing at
    ``path`` means the element was not checked. The value on file is never
    kept.

    Raises:
        ConfigurationError: neither or both of ``codes`` and ``compare``,
            an unknown template field, or a malformed path.
    """

    path: str = attrs.field(validator=lambda _i, _a, v: _check_path(v))
    codes: Mapping[str, MatchResult] = attrs.field(factory=dict)
    compare: str | None = None

    def __attrs_post_init__(self) -> None:
        if bool(self.codes) == (self.compare is not None):
            raise ConfigurationError(
                message=f"match rule {self.path}: give codes or compare, not both or neither"
            )
        if self.compare is not None:
            _check_template(self.compare, self.path)
            if _reference(self.compare) is None:
                raise ConfigurationError(
                    message=f"match rule {self.path}: compare takes a $field, got {self.compare!r}"
                )

    def read(
        self, body: Any, applicant: Applicant, request: BureauRequest, provider: str
    ) -> MatchResult:
        values = read_path(body, self.path)
        if not values:
            return MatchResult.NOT_CHECKED
        if self.compare is not None:
            ours = _fold(str(_fill(self.compare, applicant, request)))
            on_file = {_fold(str(value)) for value in values}
            return MatchResult.MATCH if ours in on_file else MatchResult.NO_MATCH
        code = str(values[0])
        try:
            return self.codes[code]
        except KeyError:
            raise ProviderResponseError(
                message=f"{provider} sent an unknown match code {code!r} at {self.path}",
                provider=provider,
                field=self.path,
            ) from None


_DELINQUENCY_KEYS = frozenset({"days_30", "days_60", "days_90_plus", "derogatory"})
_REQUIRABLE = frozenset(
    {"file_status", "score", "identity", "inquiries", "delinquencies"}
)


def _mapping_check(mapping: BureauMapping) -> None:
    paths = [
        mapping.report_id,
        mapping.file_status,
        mapping.tradelines,
        mapping.score,
        mapping.score_model,
        mapping.reason_codes,
        mapping.fraud_alerts,
        mapping.security_freeze,
        mapping.blacklist,
        mapping.inquiry_dates,
        *mapping.inquiries.values(),
        *mapping.delinquencies.values(),
    ]
    for path in paths:
        _check_path(path)
    if unknown := set(mapping.identity) - set(IDENTITY_FIELDS):
        raise ConfigurationError(
            message=f"bureau mapping: unknown identity fields {sorted(unknown)}"
        )
    if unknown := set(mapping.delinquencies) - _DELINQUENCY_KEYS:
        raise ConfigurationError(
            message=f"bureau mapping: unknown delinquency counts {sorted(unknown)}"
        )
    if unknown := set(mapping.required) - _REQUIRABLE:
        raise ConfigurationError(
            message=f"bureau mapping: cannot require {sorted(unknown)}"
        )
    if mapping.score_range is not None and not (
        mapping.score_range[0] < mapping.score_range[1]
    ):
        raise ConfigurationError(message="bureau mapping: score_range must rise")


@attrs.frozen(kw_only=True)
class BureauMapping:
    """Where a bureau's JSON answer keeps each finding: field paths, code maps and rules.

    Paths use ``.`` for keys, ``[n]`` for a list item and ``[*]`` for every
    item ([`read_path`][multiverify.providers.read_path]). A field whose path
    is ``None`` is not read. ``required`` names what must be present on a
    hit (``report_id`` always is); a missing required field, a value of the
    wrong type or an unknown code is a
    [`ProviderResponseError`][multiverify.exceptions.ProviderResponseError].

    Attributes:
        report_id: the bureau's report id.
        file_status: the hit / no-hit indicator, read through ``file_codes``;
            without it, a response is a hit.
        file_codes: the bureau's indicator values and what they mean.
        hit_marker: for bureaus without an indicator, a path present only
            when the bureau holds a file: absent, the answer is a no hit.
        tradelines: the number of accounts on file (a number, or a ``[*]``
            path: numbers there are summed, records counted); a hit with fewer than
            ``thin_file_below`` is a thin file.
        thin_file_below: see ``tradelines``.
        identity: a [`MatchRule`][multiverify.providers.MatchRule] per
            element: ``name``, ``national_id``, ``date_of_birth``, ``phone``.
        score: the score (a number, or digits such as ``"0750"``).
        score_model: the model's code; named through ``score_models``.
        score_models: model codes and their names.
        score_range: the model's lowest and highest score.
        reason_codes: the score's reason codes (a ``[*]`` path).
        fraud_alerts: alert codes on file (a ``[*]`` path).
        fraud_alert_codes: which codes are alerts, and their types; empty
            takes every value as an alert.
        security_freeze: a boolean, or codes matched against ``freeze_codes``.
        freeze_codes: the codes that mean the file is frozen.
        blacklist: the lists or categories the applicant is on (a ``[*]`` path).
        blacklist_codes: which codes are hits, and the list's name; empty
            takes every value as a hit.
        inquiries: a count path per window in days.
        inquiry_dates: inquiry dates (a ``[*]`` path), counted into
            ``inquiry_windows`` back from the pull, in ``inquiry_date_format``.
        inquiry_date_format: a ``strptime`` format.
        inquiry_windows: windows in days for ``inquiry_dates``.
        delinquencies: a count path per ``days_30``, ``days_60``,
            ``days_90_plus`` and ``derogatory`` (numbers, or ``[*]`` paths:
            numbers summed, such as a count per account, records counted).
        required: what must be present on a hit: ``file_status``, ``score``,
            ``identity``, ``inquiries``, ``delinquencies``.

    Raises:
        ConfigurationError: a malformed path or an unknown name.
    """

    report_id: str
    file_status: str | None = None
    file_codes: Mapping[str, FileStatus] = attrs.field(factory=dict)
    hit_marker: str | None = None
    tradelines: str | None = None
    thin_file_below: int = 0
    identity: Mapping[str, MatchRule] = attrs.field(factory=dict)
    score: str | None = None
    score_model: str | None = None
    score_models: Mapping[str, str] = attrs.field(factory=dict)
    score_range: tuple[int, int] | None = None
    reason_codes: str | None = None
    fraud_alerts: str | None = None
    fraud_alert_codes: Mapping[str, str] = attrs.field(factory=dict)
    security_freeze: str | None = None
    freeze_codes: frozenset[str] = attrs.field(default=frozenset(), converter=_codes)
    blacklist: str | None = None
    blacklist_codes: Mapping[str, str] = attrs.field(factory=dict)
    inquiries: Mapping[int, str] = attrs.field(factory=dict)
    inquiry_dates: str | None = None
    inquiry_date_format: str = "%Y-%m-%d"
    inquiry_windows: tuple[int, ...] = (30, 90, 180, 365)
    delinquencies: Mapping[str, str] = attrs.field(factory=dict)
    required: frozenset[str] = attrs.field(
        default=frozenset({"file_status", "score"}), converter=_codes
    )

    def __attrs_post_init__(self) -> None:
        _mapping_check(self)

    def read(
        self,
        body: Any,
        *,
        provider: str,
        preset: str,
        request: BureauRequest,
        pulled_at: datetime,
    ) -> BureauReport:
        """The report in ``body``, the parsed JSON answer.

        Raises:
            ProviderResponseError: a required field is missing, or a value
                is malformed.
        """
        reader = _Reader(self, body, provider)
        report_id = reader.text(self.report_id, required=True)
        file = reader.file_status()
        if file is FileStatus.HIT and self.tradelines is not None:
            accounts = reader.count(self.tradelines)
            if accounts is not None and accounts < self.thin_file_below:
                file = FileStatus.THIN_FILE
        # A no hit or a thin file may lack what a full file must carry.
        needs = self.required if file is FileStatus.HIT else frozenset()
        identity = IdentityMatch(
            **{
                name: rule.read(body, request.applicant, request, provider)
                for name, rule in self.identity.items()
            }
        )
        if "identity" in needs and not identity.checked:
            reader.missing("identity", "no identity element was checked")
        score = reader.number(self.score, required="score" in needs)
        model = reader.text(self.score_model)
        inquiries = reader.inquiries(pulled_at, required="inquiries" in needs)
        delinquencies = Delinquencies(
            **{
                key: reader.count(path, required="delinquencies" in needs) or 0
                for key, path in self.delinquencies.items()
            }
        )
        return BureauReport(
            provider=provider,
            preset=preset,
            report_id=report_id or "",
            file=file,
            identity=identity,
            score=score,
            score_model=None if model is None else self.score_models.get(model, model),
            score_range=self.score_range,
            reason_codes=reader.texts(self.reason_codes),
            fraud_alerts=reader.coded(self.fraud_alerts, self.fraud_alert_codes),
            security_freeze=reader.frozen(),
            blacklist_hits=reader.coded(self.blacklist, self.blacklist_codes),
            inquiries=inquiries,
            delinquencies=delinquencies,
            pulled_at=pulled_at,
        )


def _is_count(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().isascii() and value.strip().isdigit()
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Reader:
    """Typed reads of one response, each failure a ProviderResponseError naming its path."""

    def __init__(self, mapping: BureauMapping, body: Any, provider: str) -> None:
        self._m = mapping
        self._body = body
        self._provider = provider

    def missing(self, field: str, why: str) -> None:
        raise ProviderResponseError(
            message=f"{self._provider}'s report lacks {field}: {why}",
            provider=self._provider,
            field=field,
        )

    def _bad(self, path: str, value: Any, expected: str) -> ProviderResponseError:
        return ProviderResponseError(
            message=f"{self._provider} sent {type(value).__name__} at {path}, "
            f"expected {expected}",
            provider=self._provider,
            field=path,
        )

    def _first(self, path: str | None, *, required: bool) -> Any:
        if path is None:
            return None
        values = read_path(self._body, path)
        if not values:
            if required:
                self.missing(path, "no value at this path")
            return None
        return values[0]

    def text(self, path: str | None, *, required: bool = False) -> str | None:
        value = self._first(path, required=required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise self._bad(str(path), value, "text")
        text = str(value).strip()
        if required and not text:
            self.missing(str(path), "empty")
        return text or None

    def texts(self, path: str | None) -> tuple[str, ...]:
        if path is None:
            return ()
        out: list[str] = []
        for value in read_path(self._body, path):
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise self._bad(path, value, "text")
            if str(value).strip():
                out.append(str(value).strip())
        return tuple(out)

    def number(self, path: str | None, *, required: bool = False) -> int | None:
        value = self._first(path, required=required)
        if value is None:
            return None
        if (
            isinstance(value, str)
            and value.strip().isascii()
            and value.strip().isdigit()
        ):
            return int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self._bad(str(path), value, "a whole number")

    def count(self, path: str, *, required: bool = False) -> int | None:
        if "[*]" not in path:
            value = self.number(path, required=required)
            if value is not None and value < 0:
                raise self._bad(path, value, "a count")
            return value
        values = read_path(self._body, path)
        if not all(_is_count(value) for value in values):
            return len(values)  # records (accounts, public records): counted
        return sum(int(value) for value in values)  # counts per record: summed

    def file_status(self) -> FileStatus:
        code = self.text(
            self._m.file_status, required="file_status" in self._m.required
        )
        if code is None:
            if self._m.hit_marker is None or read_path(self._body, self._m.hit_marker):
                return FileStatus.HIT
            return FileStatus.NO_HIT
        try:
            return self._m.file_codes[code]
        except KeyError:
            raise ProviderResponseError(
                message=f"{self._provider} sent an unknown file status {code!r}",
                provider=self._provider,
                field=str(self._m.file_status),
            ) from None

    def coded(self, path: str | None, names: Mapping[str, str]) -> tuple[str, ...]:
        codes = self.texts(path)
        if not names:
            return codes
        return tuple(names[code] for code in codes if code in names)

    def frozen(self) -> bool:
        path = self._m.security_freeze
        if path is None:
            return False
        values = read_path(self._body, path)
        if not self._m.freeze_codes:
            for value in values:
                if not isinstance(value, bool):
                    raise self._bad(path, value, "a boolean")
            return any(values)
        return any(code in self._m.freeze_codes for code in self.texts(path))

    def inquiries(self, pulled_at: datetime, *, required: bool) -> list[InquiryCount]:
        counts = [
            InquiryCount(days=days, count=self.count(path, required=required) or 0)
            for days, path in self._m.inquiries.items()
        ]
        path = self._m.inquiry_dates
        if path is None:
            return counts
        day = pulled_at.date()
        ages: list[int] = []
        for value in self.texts(path):
            try:
                asked = datetime.strptime(  # noqa: DTZ007 - a calendar date, made aware below
                    value, self._m.inquiry_date_format
                )
            except ValueError:
                raise self._bad(
                    path, value, f"a date as {self._m.inquiry_date_format}"
                ) from None
            ages.append((day - asked.replace(tzinfo=UTC).date()).days)
        return counts + [
            InquiryCount(
                days=window, count=sum(1 for age in ages if 0 <= age <= window)
            )
            for window in self._m.inquiry_windows
        ]


# -- presets ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class BureauPreset:
    """A bureau layout: where to POST, what to send, how to read the answer, and a sandbox fixture.

    Attributes:
        name: the preset's name.
        description: one line on the layout and its source.
        path: the report endpoint, relative to the base URL.
        template: the request body ([`template_fields`][multiverify.providers.template_fields]).
        mapping: how the answer is read.
        fixture: the sandbox answer's file name in the package.
    """

    name: str
    description: str
    path: str
    template: Mapping[str, Any]
    mapping: BureauMapping
    fixture: str

    def __attrs_post_init__(self) -> None:
        _check_template(self.template, self.name)

    def sample(self) -> dict[str, Any]:
        """The preset's sandbox answer: a clean file, as the bureau would send it."""
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


# -- OAuth2 ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True, repr=False)
class OAuth2Token:
    """How the adapter gets its Bearer token (RFC 6749), and how long it trusts one.

    Attributes:
        url: the token endpoint.
        client_id: the client's id.
        client_secret: the client's secret.
        grant: ``client_credentials`` (§4.4) or ``password`` (§4.3, with
            ``username`` and ``password``).
        username: the resource owner's name, for the password grant.
        password: their password.
        scope: the scope to ask for, if any.
        client_auth: ``basic`` (HTTP Basic, §2.3.1) or ``body`` (the
            client's id and secret as form fields).
        skew: seconds before ``expires_in`` at which a token counts as expired.
        default_ttl: how long a token without ``expires_in`` is used.

    Raises:
        ConfigurationError: the password grant without a username and
            password, or an unknown grant.
    """

    url: str
    client_id: str
    client_secret: str
    grant: Literal["client_credentials", "password"] = "client_credentials"
    username: str | None = None
    password: str | None = None
    scope: str | None = None
    client_auth: Literal["basic", "body"] = "basic"
    skew: float = 60.0
    default_ttl: float = 300.0

    def __attrs_post_init__(self) -> None:
        if self.grant not in ("client_credentials", "password"):
            raise ConfigurationError(message=f"unknown OAuth2 grant {self.grant!r}")
        if self.grant == "password" and (not self.username or not self.password):
            raise ConfigurationError(
                message="the OAuth2 password grant needs a username and password"
            )
        if self.client_auth not in ("basic", "body"):
            raise ConfigurationError(
                message=f"unknown OAuth2 client_auth {self.client_auth!r}"
            )

    def __repr__(self) -> str:
        return f"<OAuth2Token({self.grant}, {self.url}, client_id={self.client_id})>"

    def request(self) -> httpx.Request:
        """The token request."""
        form: dict[str, str] = {"grant_type": self.grant}
        if self.grant == "password":
            form["username"] = str(self.username)
            form["password"] = str(self.password)
        if self.scope:
            form["scope"] = self.scope
        auth: dict[str, str] = {}
        if self.client_auth == "body":
            form["client_id"] = self.client_id
            form["client_secret"] = self.client_secret
        else:
            pair = f"{quote(self.client_id)}:{quote(self.client_secret)}"
            auth["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return httpx.Request(
            "POST",
            self.url,
            data=form,
            headers={"Accept": "application/json", **auth},
        )


# -- the adapter -------------------------------------------------------------------------


class HttpBureau:
    """A [`BureauProvider`][multiverify.providers.BureauProvider] for any JSON bureau over HTTP.

    Args:
        preset: the layout, a [`BureauPreset`][multiverify.providers.BureauPreset]
            or the name of a shipped one.
        base_url: the bureau's API root.
        token: how to get the Bearer token; ``None`` sends none (a gateway
            that authenticates by mTLS or a static header).
        name: the provider's name, as policies list it.
        template: the request body, in place of the preset's.
        mapping: the response mapping, in place of the preset's.
        headers: static headers sent with every pull (Experian's
            ``companyId``, a subscriber code).
        idempotency_header: the header carrying the attempt's key; ``None``
            sends none.
        purpose_codes: our permissible purposes and the bureau's codes for
            them; when given, another purpose is refused before any request.
        client: an httpx client (left open); one is made (and closed) otherwise.
        clock: the clock token expiry is measured on.
        timeout: seconds per request, for a client this provider makes.

    Raises:
        ConfigurationError: an unknown preset, or a template naming an
            unknown field.
    """

    def __init__(
        self,
        preset: BureauPreset | str,
        *,
        base_url: str,
        token: OAuth2Token | None,
        name: str | None = None,
        template: Mapping[str, Any] | None = None,
        mapping: BureauMapping | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_header: str | None = "Idempotency-Key",
        purpose_codes: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._preset = bureau_preset(preset) if isinstance(preset, str) else preset
        self._name = name or self._preset.name
        self._base_url = base_url.rstrip("/")
        self._token_config = token
        self._template = dict(
            template if template is not None else self._preset.template
        )
        _check_template(self._template, "template")
        self._mapping = mapping or self._preset.mapping
        self._headers = dict(headers or {})
        self._idempotency_header = idempotency_header
        self._purpose_codes = dict(purpose_codes or {})
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._token: tuple[str, datetime] | None = None
        self._lock = asyncio.Lock()
        self.token_requests = 0
        """How many tokens were fetched (a cached token is reused)."""

    def __repr__(self) -> str:
        return f"<multiverify.providers.HttpBureau({self._name}, {self._preset.name})>"

    @property
    def name(self) -> str:
        """The provider's name."""
        return self._name

    @property
    def preset(self) -> str:
        """The preset's name."""
        return self._preset.name

    async def pull(self, request: BureauRequest, /) -> BureauReport:
        """Fetch a token if needed, POST the filled template, read the answer.

        Raises:
            PullNotPermittedError: ``purpose_codes`` lacks the purpose.
            InvalidInputError: the template needs a field the applicant lacks.
            ProviderAuthError: the token was refused, or a fresh one was too.
            ProviderResponseError: a malformed token or report.
            ProviderError: for other statuses and transport errors.
        """
        if self._purpose_codes and request.purpose not in self._purpose_codes:
            raise PullNotPermittedError(
                message=f"{self._name} has no purpose code for {request.purpose!r}",
                reason="purpose_not_supported",
                purpose=request.purpose,
            )
        code = self._purpose_codes.get(request.purpose, request.purpose)
        body = _fill(
            self._template, request.applicant, attrs.evolve(request, purpose=code)
        )
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        response = await self._send(request, content, fresh=False)
        if response.status_code == httpx.codes.UNAUTHORIZED and self._token_config:
            # RFC 6750 §3.1: an expired or revoked token; fetch one more, once.
            response = await self._send(request, content, fresh=True)
        if not response.is_success:
            raise error_for_response(self._name, response)
        try:
            answer = response.json()
        except ValueError:
            raise ProviderResponseError(
                message=f"{self._name} answered with a body that is not JSON",
                provider=self._name,
                field="body",
            ) from None
        if not isinstance(answer, Mapping):
            raise ProviderResponseError(
                message=f"{self._name} answered with JSON that is not an object",
                provider=self._name,
                field="body",
            )
        return self._mapping.read(
            answer,
            provider=self._name,
            preset=self._preset.name,
            request=request,
            pulled_at=self._clock.now(),
        )

    async def aclose(self) -> None:
        """Close the HTTP client this provider made."""
        if self._own_client:
            await self._client.aclose()

    async def _send(
        self, request: BureauRequest, content: bytes, *, fresh: bool
    ) -> httpx.Response:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            **self._headers,
        }
        if self._token_config is not None:
            headers["Authorization"] = f"Bearer {await self._bearer(fresh=fresh)}"
        if self._idempotency_header:
            headers[self._idempotency_header] = request.reference
        return await exchange(
            self._client,
            self._name,
            httpx.Request(
                "POST",
                self._base_url + self._preset.path,
                content=content,
                headers=headers,
            ),
        )

    async def _bearer(self, *, fresh: bool) -> str:
        async with self._lock:
            now = self._clock.now()
            if self._token is not None and not fresh and now < self._token[1]:
                return self._token[0]
            self._token = await self._fetch_token(now)
            return self._token[0]

    async def _fetch_token(self, now: datetime) -> tuple[str, datetime]:
        config = self._token_config
        assert config is not None  # noqa: S101 - only called with a token config
        self.token_requests += 1
        response = await exchange(self._client, self._name, config.request())
        if not response.is_success:
            error = error_for_response(
                self._name,
                response,
                message=f"{self._name}'s token endpoint "
                f"answered HTTP {response.status_code}",
            )
            if response.status_code == httpx.codes.BAD_REQUEST:
                # RFC 6749 §5.2: invalid_client / invalid_grant come back as 400.
                raise ProviderAuthError(
                    message=str(error), provider=self._name, status_code=400
                )
            raise error
        try:
            data = response.json()
        except ValueError:
            data = None
        token = data.get("access_token") if isinstance(data, Mapping) else None
        if not isinstance(token, str) or not token:
            raise ProviderResponseError(
                message=f"{self._name}'s token endpoint sent no access_token",
                provider=self._name,
                field="access_token",
            )
        expires = data.get("expires_in") if isinstance(data, Mapping) else None
        if isinstance(expires, str) and expires.isdigit():
            expires = int(expires)
        ttl = (
            float(expires)
            if isinstance(expires, int | float) and not isinstance(expires, bool)
            else config.default_ttl
        )
        return token, now + timedelta(seconds=max(ttl - config.skew, 0.0))

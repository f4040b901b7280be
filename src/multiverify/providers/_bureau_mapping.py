"""Reading a bureau's JSON: field paths, the request template, and the response mapping.

A request template is JSON whose ``"$name"`` strings are filled from the
applicant and the pull ([`template_fields`][multiverify.providers.template_fields]);
a [`BureauMapping`][multiverify.providers.BureauMapping] reads the answer by
field paths (``creditProfile[0].riskModel[*].score``,
[`read_path`][multiverify.providers.read_path]) into a
[`BureauReport`][multiverify.providers.BureauReport], every failure a
[`ProviderResponseError`][multiverify.exceptions.ProviderResponseError]
naming its path.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import phonenumbers

from .._applicant import Applicant
from ..exceptions import ConfigurationError, InvalidInputError, ProviderResponseError
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

__all__ = ["BureauMapping", "MatchRule", "read_path", "template_fields"]

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


def check_template(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_template(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_template(item, f"{where}[{index}]")
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


def fill_template(value: Any, applicant: Applicant, request: BureauRequest) -> Any:
    if isinstance(value, Mapping):
        return {k: fill_template(v, applicant, request) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_template(v, applicant, request) for v in value]
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
            check_template(self.compare, self.path)
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
            ours = _fold(str(fill_template(self.compare, applicant, request)))
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

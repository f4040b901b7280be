"""The confirmation-call script: prompts, expected answers, templates, and the step's call options.

A [`CallScript`][multiverify.channels.CallScript] is plain data, built in
Python or read from a policy file (a step's ``options.script``, or a named
table under the policy's ``scripts``). Reading collects every mistake with
its location, as policies do. Two rules are enforced there: when the call is
recorded, the first prompt tells the callee so; and an identity prompt never
reads personal data aloud, it asks for it.

Templates are ``str.format`` strings over the loan and the lender, rendered
per locale with Babel (CLDR): ``{amount}`` becomes ``¥8,000.00`` in
``zh-CN`` and ``CN¥8,000.00`` in ``en``.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Iterable, Mapping
from datetime import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from ._duration import parse_duration
from ._masking import mask_name
from .compliance._windows import (
    AttemptSchedule,
    CallingWindow,
    format_schedule_entry,
    parse_clock,
    parse_schedule_entry,
)
from .exceptions import PolicyError, PolicyProblem

if TYPE_CHECKING:
    from ._applicant import Applicant

__all__ = [
    "Answer",
    "AnswerKind",
    "CallScript",
    "Expect",
    "MismatchAction",
    "PhoneCallOptions",
    "Prompt",
    "PromptKind",
    "phone_options",
    "phone_options_problems",
    "script_problems",
]


class PromptKind(enum.StrEnum):
    """What a prompt is for."""

    DISCLOSURE = "disclosure"
    IDENTITY = "identity"
    INTENT = "intent"
    DETAIL = "detail"
    RISK = "risk"


class AnswerKind(enum.StrEnum):
    """What a prompt expects back."""

    NONE = "none"
    DIGITS = "digits"
    YES_NO = "yes_no"
    SPEECH = "speech"


class MismatchAction(enum.StrEnum):
    """How a wrong answer counts.

    ``fail`` ends the call failed; ``flag`` notes it and goes on;
    ``call_back`` ends this call politely and calls again per the attempt
    schedule (a callee who does not consent to the call now).
    """

    FAIL = "fail"
    FLAG = "flag"
    CALL_BACK = "call_back"


#: Where the digits an identity or detail prompt asks for are compared from.
DIGIT_SOURCES: Mapping[str, str] = {
    "national_id_last4": "the last four characters of the national ID (* for X)",
    "national_id_last6": "the last six characters of the national ID (* for X)",
    "birth_year": "the year of birth",
    "birth_mmdd": "month and day of birth, MMDD",
    "phone_last4": "the last four digits of the phone number",
    "term_months": "the loan's term in months",
    "installments": "the number of installments",
    "amount": "the loan amount, whole units",
}
#: Where a speech prompt's keywords come from, besides its own ``keywords``.
SPEECH_SOURCES = frozenset({"purpose"})

#: Placeholders a template may use; the personal ones never in an identity prompt.
LOAN_FIELDS = frozenset(
    {
        "amount",
        "currency",
        "term_months",
        "purpose",
        "fees",
        "annual_rate",
        "installments",
        "installment_amount",
        "first_due",
        "frequency",
    }
)
SCRIPT_FIELDS = frozenset({"brand", "yes_key", "no_key", "digits"})
PERSONAL_FIELDS = frozenset({"name", "surname"})
TEMPLATE_FIELDS = LOAN_FIELDS | SCRIPT_FIELDS | PERSONAL_FIELDS

_DEFAULT_SIGNALS: Mapping[PromptKind, str] = {
    PromptKind.DISCLOSURE: "refused",
    PromptKind.IDENTITY: "identity_mismatch",
    PromptKind.INTENT: "intent_declined",
    PromptKind.DETAIL: "detail_mismatch",
    PromptKind.RISK: "third_party_present",
}
_DEFAULT_ACTIONS: Mapping[PromptKind, MismatchAction] = {
    PromptKind.DISCLOSURE: MismatchAction.CALL_BACK,
    PromptKind.IDENTITY: MismatchAction.FAIL,
    PromptKind.INTENT: MismatchAction.FAIL,
    PromptKind.DETAIL: MismatchAction.FLAG,
    PromptKind.RISK: MismatchAction.FLAG,
}
#: Signals a prompt may raise on a mismatch.
MISMATCH_SIGNALS = frozenset(
    {
        "refused",
        "identity_mismatch",
        "intent_declined",
        "detail_mismatch",
        "inconsistent",
        "third_party_present",
        "coached",
        "evasive_answer",
        "wrong_person",
        "call_back_later",
    }
)


def _texts(value: Mapping[str, str]) -> Mapping[str, str]:
    return dict(value)


def _keywords(value: Mapping[str, Iterable[str]]) -> Mapping[str, tuple[str, ...]]:
    return {locale: tuple(words) for locale, words in value.items()}


@attrs.frozen(kw_only=True)
class Expect:
    """The answer a prompt waits for.

    Attributes:
        kind: nothing, DTMF digits, a yes/no key, or speech.
        length: digits: how many (``None``: ended by ``#``).
        source: digits: what they must equal (see ``DIGIT_SOURCES``);
            speech: ``purpose`` adds the loan purpose's words to the keywords.
        yes_key: yes/no: the key for yes.
        no_key: yes/no: the key for no.
        answer: yes/no: the answer that matches, ``yes`` or ``no``.
        keywords: speech: words per locale; an answer naming any matches.
    """

    kind: AnswerKind = attrs.field(default=AnswerKind.NONE, converter=AnswerKind)
    length: int | None = None
    source: str | None = None
    yes_key: str = "1"
    no_key: str = "2"
    answer: str = "yes"
    keywords: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, converter=_keywords, hash=False
    )


@attrs.frozen(kw_only=True)
class Prompt:
    """One question (or statement) of the call.

    Attributes:
        id: unique within the script; agents' answers are keyed by it.
        kind: disclosure, identity, intent, detail or risk.
        text: the template per locale (``zh-CN``, ``en``...).
        expect: the answer it waits for.
        on_mismatch: how a wrong answer counts (by default ``call_back``
            for a disclosure, ``fail`` for identity and intent, ``flag``
            for details and risk).
        signal: the signal a wrong answer raises (by default
            ``call_back_later`` for ``call_back``, else per kind:
            ``refused``, ``identity_mismatch``, ``intent_declined``,
            ``detail_mismatch``, ``third_party_present``).
        reprompts: how often a missing or malformed answer is asked again
            before it counts as wrong.
        timeout: seconds to wait for the answer.
        hesitation: seconds from asking to answering beyond which the
            answer counts as hesitant (``None``: never).
        weight: the prompt's share of the call's score.
        recording_notice: a disclosure that tells the callee the call is recorded.
    """

    id: str
    kind: PromptKind = attrs.field(converter=PromptKind)
    text: Mapping[str, str] = attrs.field(converter=_texts, hash=False)
    expect: Expect = attrs.Factory(Expect)
    on_mismatch: MismatchAction | None = None
    signal: str | None = None
    reprompts: int = 1
    timeout: float = 8.0
    hesitation: float | None = 6.0
    weight: float = 1.0
    recording_notice: bool = False

    @property
    def mismatch_action(self) -> MismatchAction:
        """``on_mismatch``, or the kind's default."""
        return self.on_mismatch or _DEFAULT_ACTIONS[self.kind]

    @property
    def mismatch_signal(self) -> str:
        """``signal``, or the default: ``call_back_later`` for ``call_back``, else the kind's."""
        if self.signal is not None:
            return self.signal
        if self.mismatch_action is MismatchAction.CALL_BACK:
            return "call_back_later"
        return _DEFAULT_SIGNALS[self.kind]


def _prompts(values: Iterable[Prompt]) -> tuple[Prompt, ...]:
    return tuple(values)


_LOCALE_FALLBACK = "zh-CN"


def _said(zh: str, en: str) -> Any:
    """A script field of texts per locale, defaulting to the built-in ``zh-CN`` and ``en``."""
    return attrs.field(
        factory=lambda: {"zh-CN": zh, "en": en}, converter=_texts, hash=False
    )


@attrs.frozen(kw_only=True)
class CallScript:
    """The ordered prompts of a confirmation call.

    Attributes:
        name: the script's name, recorded in results.
        brand: the lender's name, ``{brand}`` in templates.
        prompts: in the order they are asked.
        recording: whether the call is recorded (then the first prompt must
            be a disclosure with ``recording_notice``).
        default_locale: the locale used when the applicant's has no text.
        retry_text: said before a question is asked again, per locale.
        closing: said before hanging up after the last prompt, per locale.
        ending: said before hanging up early (a failed answer), per locale.
        call_back: said before hanging up to call again later, per locale.

    Raises:
        PolicyError: the script breaks a rule (see [`script_problems`][multiverify.channels.script_problems]).
    """

    name: str
    brand: str = ""
    prompts: tuple[Prompt, ...] = attrs.field(converter=_prompts)
    recording: bool = False
    default_locale: str = _LOCALE_FALLBACK
    retry_text: Mapping[str, str] = _said(
        "抱歉，没有听清您的回答。", "Sorry, I did not get that."
    )
    closing: Mapping[str, str] = _said(
        "感谢您的配合，再见。", "Thank you for your time. Goodbye."
    )
    ending: Mapping[str, str] = _said(
        "我们暂时无法继续本次核实，稍后会有工作人员与您联系。再见。",
        "We cannot complete this check now; a colleague will contact you. Goodbye.",
    )
    call_back: Mapping[str, str] = _said(
        "好的，我们稍后再给您来电。再见。",
        "All right, we will call you again later. Goodbye.",
    )

    def __attrs_post_init__(self) -> None:
        problems = _script_rules(self, "script")
        if problems:
            raise PolicyError(
                message=f"call script {self.name!r} is invalid", problems=problems
            )

    def prompt(self, prompt_id: str) -> Prompt:
        """The prompt with this id.

        Raises:
            KeyError: no such prompt.
        """
        for prompt in self.prompts:
            if prompt.id == prompt_id:
                return prompt
        raise KeyError(prompt_id)

    def locale_for(self, wanted: str) -> str:
        """The locale to speak: ``wanted`` if every text has it, else its language, else the default."""
        candidates = [wanted, wanted.split("-", 1)[0], self.default_locale]
        for candidate in candidates:
            if all(candidate in prompt.text for prompt in self.prompts):
                return candidate
        return self.default_locale

    @classmethod
    def default(cls, *, brand: str = "", recording: bool = True) -> CallScript:
        """The built-in loan-confirmation script, in ``zh-CN`` and ``en``.

        A recording notice (when ``recording``), the last four characters of
        the ID and the birth year, the loan read out and confirmed, its
        purpose confirmed, and whether someone else is pushing the loan.
        """
        prompts = [
            Prompt(
                id="recording",
                kind=PromptKind.DISCLOSURE,
                recording_notice=recording,
                text={
                    "zh-CN": "您好，这里是{brand}的贷款核实电话"
                    + ("，本次通话将被录音。" if recording else "。")
                    + "继续请按{yes_key}，不方便请按{no_key}。",
                    "en": "Hello, this is {brand} calling about your loan application."
                    + (" This call is recorded." if recording else "")
                    + " To continue press {yes_key}; if now is not a good time press {no_key}.",
                },
                expect=Expect(kind=AnswerKind.YES_NO),
                hesitation=None,
            ),
            Prompt(
                id="id_last4",
                kind=PromptKind.IDENTITY,
                text={
                    "zh-CN": "请输入您身份证号码的后四位，字母X请按星号键。",
                    "en": "Please enter the last four characters of your national ID; for X press star.",
                },
                expect=Expect(
                    kind=AnswerKind.DIGITS, length=4, source="national_id_last4"
                ),
                reprompts=2,
                timeout=10.0,
                hesitation=8.0,
            ),
            Prompt(
                id="birth_year",
                kind=PromptKind.IDENTITY,
                text={
                    "zh-CN": "请输入您的出生年份，共四位数字。",
                    "en": "Please enter your year of birth, four digits.",
                },
                expect=Expect(kind=AnswerKind.DIGITS, length=4, source="birth_year"),
                reprompts=2,
            ),
            Prompt(
                id="loan_terms",
                kind=PromptKind.INTENT,
                text={
                    "zh-CN": "您申请的借款金额为{amount}，期限{term_months}个月，"
                    "手续费{fees}。确认申请请按{yes_key}，否认请按{no_key}。",
                    "en": "You applied to borrow {amount} over {term_months} months, "
                    "with fees of {fees}. To confirm press {yes_key}; "
                    "if you did not apply press {no_key}.",
                },
                expect=Expect(kind=AnswerKind.YES_NO),
                hesitation=8.0,
                weight=2.0,
            ),
            Prompt(
                id="purpose",
                kind=PromptKind.DETAIL,
                text={
                    "zh-CN": "借款用途是否为：{purpose}？是请按{yes_key}，不是请按{no_key}。",
                    "en": "Is the loan for: {purpose}? Press {yes_key} for yes, {no_key} for no.",
                },
                expect=Expect(kind=AnswerKind.YES_NO),
            ),
            Prompt(
                id="third_party",
                kind=PromptKind.RISK,
                signal="coached",
                text={
                    "zh-CN": "是否有其他人要求您办理这笔借款，或告诉您如何回答？"
                    "没有请按{no_key}，有请按{yes_key}。",
                    "en": "Has anyone asked you to take this loan, or told you how to "
                    "answer? Press {no_key} for no, {yes_key} for yes.",
                },
                expect=Expect(kind=AnswerKind.YES_NO, answer="no"),
            ),
        ]
        return cls(
            name="loan-confirmation",
            brand=brand,
            prompts=prompts,
            recording=recording,
        )


#: ``{brand}`` when the lender named none.
_DEFAULT_BRAND = {"zh-CN": "贷款机构", "en": "your lender"}


# -- rendering -----------------------------------------------------------------


def _babel_locale(locale: str) -> str:
    return locale.replace("-", "_")


def template_fields(template: str) -> set[str]:
    """The placeholder names a template uses.

    Raises:
        ValueError: the template does not parse.
    """
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            names.add(field.split(".", 1)[0].split("[", 1)[0])
    return names


def render_values(
    script: CallScript,
    prompt: Prompt,
    applicant: Applicant,
    locale: str,
    *,
    masked: bool = False,
) -> dict[str, str]:
    """The template values for one prompt, formatted for ``locale`` with Babel."""
    from babel.dates import format_date  # noqa: PLC0415 - Babel loads its data lazily
    from babel.numbers import (  # noqa: PLC0415
        format_currency,
        format_decimal,
        format_percent,
    )

    where = _babel_locale(locale)
    loan = applicant.loan
    repayment = loan.repayment
    name = mask_name(applicant.name) if masked else applicant.name
    return {
        "brand": script.brand
        or _DEFAULT_BRAND.get(locale, _DEFAULT_BRAND.get(locale[:2], "")),
        "amount": format_currency(loan.amount, loan.currency, locale=where),
        "currency": loan.currency,
        "term_months": str(loan.term_months),
        "purpose": loan.purpose,
        "fees": format_currency(loan.fees, loan.currency, locale=where),
        "annual_rate": ""
        if loan.annual_rate is None
        else format_percent(loan.annual_rate, "#,##0.##%", locale=where),
        "installments": str(repayment.installments) if repayment else "",
        "installment_amount": format_currency(
            repayment.installment_amount, loan.currency, locale=where
        )
        if repayment
        else "",
        "first_due": format_date(repayment.first_due, format="long", locale=where)
        if repayment
        else "",
        "frequency": repayment.frequency if repayment else "",
        "yes_key": prompt.expect.yes_key,
        "no_key": prompt.expect.no_key,
        "digits": format_decimal(prompt.expect.length or 0, locale=where),
        "name": name,
        "surname": name.split()[0] if name.split() else name,
    }


def render(
    script: CallScript,
    prompt: Prompt,
    applicant: Applicant,
    locale: str,
    *,
    masked: bool = False,
) -> str:
    """The prompt's text for ``locale``, filled in (names masked when ``masked``)."""
    template = prompt.text.get(locale) or prompt.text[script.default_locale]
    return template.format_map(
        render_values(script, prompt, applicant, locale, masked=masked)
    )


def expected_digits(source: str, applicant: Applicant) -> str:
    """The digits an identity or detail prompt's answer must equal."""
    dob = applicant.date_of_birth
    loan = applicant.loan
    values = {
        "national_id_last4": applicant.national_id[-4:],
        "national_id_last6": applicant.national_id[-6:],
        "birth_year": f"{dob.year:04d}",
        "birth_mmdd": f"{dob.month:02d}{dob.day:02d}",
        "phone_last4": applicant.phone[-4:],
        "term_months": str(loan.term_months),
        "installments": str(loan.repayment.installments) if loan.repayment else "",
        "amount": str(int(loan.amount.to_integral_value())),
    }
    return values[source].upper()


_PUNCTUATION = string.punctuation + "，。、；：？！“”‘’（）《》…"


def speech_keywords(
    prompt: Prompt, applicant: Applicant, locale: str
) -> tuple[str, ...]:
    """The words a speech answer is matched against."""
    words = list(prompt.expect.keywords.get(locale, ()))
    words += prompt.expect.keywords.get(locale.split("-", 1)[0], ())
    if prompt.expect.source == "purpose":
        # Typed punctuation ("Laptop, for work.") is never spoken: a keyword
        # that kept it would match no transcript.
        purpose = applicant.loan.purpose.strip(_PUNCTUATION)
        words.append(purpose)
        parts = (w.strip(_PUNCTUATION) for w in purpose.split())
        words += [w for w in parts if len(w) > 3]  # noqa: PLR2004 - skip small words
    return tuple(dict.fromkeys(w.strip().lower() for w in words if w.strip()))


@attrs.frozen(kw_only=True)
class Answer:
    """How one prompt was answered, without the answer itself (it may be personal).

    Attributes:
        prompt_id: the prompt.
        matched: whether it matched (``None``: nothing was expected).
        invalid: how many malformed or missing answers came first.
        response_time: seconds from asking to answering, when known.
        hesitant: the response took longer than the prompt allows.
        confidence: the analyzer's or recogniser's confidence, for speech.
        signals: signals the answer raised.
    """

    prompt_id: str
    matched: bool | None
    invalid: int = 0
    response_time: float | None = None
    hesitant: bool = False
    confidence: float | None = None
    signals: tuple[str, ...] = ()


def normalize_digits(digits: str, source: str | None) -> str:
    """DTMF as compared: ``*`` stands for the letter X of a national ID."""
    if source is not None and source.startswith("national_id"):
        return digits.replace("*", "X")
    return digits


def digits_valid(digits: str, expect: Expect) -> bool:
    """Whether DTMF input is well formed for the prompt (right length, digits)."""
    allowed = set("0123456789")
    if expect.source is not None and expect.source.startswith("national_id"):
        allowed.add("*")
    if not digits or not set(digits) <= allowed:
        return False
    return expect.length is None or len(digits) == expect.length


def yes_no(key: str, expect: Expect) -> str | None:
    """``yes``, ``no``, or ``None`` for another key."""
    if key == expect.yes_key:
        return "yes"
    if key == expect.no_key:
        return "no"
    return None


# -- step options ----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PhoneCallOptions:
    """A phone-call step's settings, read from its policy ``options``.

    Attributes:
        script: the call script.
        calling_window: when the applicant may be called, locally.
        schedule: when to call again after no answer or busy.
        zone: ``applicant`` (the applicant's time zone) or ``phone`` (the
            zones of the number's region).
        ring_timeout: seconds to let the phone ring.
        time_limit: the longest a call may last, in seconds.
        recording_wait: how long, in seconds, a recorded call's result waits
            after the call for the vendor's recording reference.
        machine_detection: detect answering machines (and hang up on them).
        language: the locale to speak, instead of the applicant's.
    """

    script: CallScript
    calling_window: CallingWindow = attrs.Factory(CallingWindow)
    schedule: AttemptSchedule = attrs.Factory(AttemptSchedule)
    zone: str = "applicant"
    ring_timeout: float = 30.0
    time_limit: float = 600.0
    recording_wait: float = 300.0
    machine_detection: bool = True
    language: str | None = None


_OPTION_KEYS = frozenset(
    {
        "script",
        "recording",
        "calling_window",
        "retry_schedule",
        "max_attempts",
        "max_per_day",
        "zone",
        "ring_timeout",
        "time_limit",
        "recording_wait",
        "machine_detection",
        "brand",
        "language",
    }
)
_WINDOW_KEYS = frozenset({"start", "end", "weekdays", "blocked_dates"})
_SCRIPT_KEYS = frozenset(
    {
        "name",
        "brand",
        "prompts",
        "recording",
        "default_locale",
        "retry_text",
        "closing",
        "ending",
        "call_back",
    }
)
_PROMPT_KEYS = frozenset(
    {
        "id",
        "kind",
        "text",
        "expect",
        "on_mismatch",
        "signal",
        "reprompts",
        "timeout",
        "hesitation",
        "weight",
        "recording_notice",
    }
)
_EXPECT_KEYS = frozenset(
    {"kind", "length", "source", "yes_key", "no_key", "answer", "keywords"}
)
_WEEKDAY_NAMES = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_KEYS = frozenset("0123456789*#")


class _Reader:
    """Reads option tables, collecting located problems. Strictly private."""

    def __init__(self) -> None:
        self.problems: list[PolicyProblem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(PolicyProblem(path=path, message=message))

    def table(
        self, value: object, path: str, allowed: frozenset[str]
    ) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.problem(path, f"expected a table, got {type(value).__name__}")
            return None
        for key in value:
            if key not in allowed:
                self.problem(
                    f"{path}.{key}",
                    f"unknown key; known keys: {', '.join(sorted(allowed))}",
                )
        return value

    def text(self, value: object, path: str) -> str | None:
        if isinstance(value, str):
            return value
        self.problem(path, f"expected a string, got {type(value).__name__}")
        return None

    def flag(self, value: object, path: str) -> bool | None:
        if isinstance(value, bool):
            return value
        self.problem(path, "expected true or false")
        return None

    def count(self, value: object, path: str, *, minimum: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, "expected a whole number")
            return None
        if value < minimum:
            self.problem(path, f"must be at least {minimum}, got {value}")
            return None
        return value

    def seconds(self, value: object, path: str) -> float | None:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(path, str(exc))
            return None

    def number(self, value: object, path: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(path, "expected a number")
            return None
        if value < 0:
            self.problem(path, "must not be negative")
            return None
        return float(value)

    def texts(self, value: object, path: str) -> dict[str, str] | None:
        table = self.table(value, path, frozenset(_any_key(value)))
        if table is None:
            return None
        out = {}
        for locale, text in table.items():
            checked = self.text(text, f"{path}.{locale}")
            if checked is not None:
                out[str(locale)] = checked
        if not out:
            self.problem(path, "give the text in at least one locale, such as zh-CN")
            return None
        return out

    def choice(self, value: object, path: str, kind: type[enum.StrEnum]) -> Any:
        text = self.text(value, path)
        if text is None:
            return None
        try:
            return kind(text)
        except ValueError:
            names = ", ".join(member.value for member in kind)
            self.problem(path, f"{text!r} is not one of {names}")
            return None

    # -- the script ----------------------------------------------------------------

    def expect(self, value: object, path: str) -> Expect | None:
        table = self.table(value, path, _EXPECT_KEYS)
        if table is None:
            return None
        settings: dict[str, Any] = {}
        ok = True
        if "kind" in table:
            settings["kind"] = self.choice(table["kind"], f"{path}.kind", AnswerKind)
            ok = settings["kind"] is not None
        if "length" in table:
            settings["length"] = self.count(
                table["length"], f"{path}.length", minimum=1
            )
            ok = ok and settings["length"] is not None
        for key in ("source", "yes_key", "no_key", "answer"):
            if key in table:
                settings[key] = self.text(table[key], f"{path}.{key}")
                ok = ok and settings[key] is not None
        if "keywords" in table:
            words = self.table(
                table["keywords"],
                f"{path}.keywords",
                frozenset(_any_key(table["keywords"])),
            )
            if words is None:
                ok = False
            else:
                settings["keywords"] = {}
                for locale, listed in words.items():
                    if not isinstance(listed, list) or not all(
                        isinstance(w, str) for w in listed
                    ):
                        self.problem(
                            f"{path}.keywords.{locale}", "expected a list of words"
                        )
                        ok = False
                    else:
                        settings["keywords"][str(locale)] = tuple(listed)
        return Expect(**settings) if ok else None

    def prompt(self, value: object, path: str) -> Prompt | None:
        table = self.table(value, path, _PROMPT_KEYS)
        if table is None:
            return None
        ok = True
        for key in ("id", "kind", "text"):
            if key not in table:
                self.problem(f"{path}.{key}", "missing required key")
                ok = False
        settings: dict[str, Any] = {}
        readers: dict[str, Any] = {
            "id": self.text,
            "kind": lambda v, p: self.choice(v, p, PromptKind),
            "text": self.texts,
            "expect": self.expect,
            "on_mismatch": lambda v, p: self.choice(v, p, MismatchAction),
            "signal": self.text,
            "reprompts": lambda v, p: self.count(v, p, minimum=0),
            "timeout": self.seconds,
            "hesitation": self.seconds,
            "weight": self.number,
            "recording_notice": self.flag,
        }
        for key, read in readers.items():
            if key in table:
                result = read(table[key], f"{path}.{key}")
                ok = ok and result is not None
                settings[key] = result
        return Prompt(**settings) if ok else None

    def script(self, value: object, path: str, *, name: str) -> CallScript | None:
        table = self.table(value, path, _SCRIPT_KEYS)
        if table is None:
            return None
        settings: dict[str, Any] = {"name": name}
        ok = True
        if "prompts" not in table:
            self.problem(f"{path}.prompts", "missing required key")
            return None
        listed = table["prompts"]
        if not isinstance(listed, list) or not listed:
            self.problem(f"{path}.prompts", "expected a list of at least one prompt")
            return None
        prompts = [
            self.prompt(item, f"{path}.prompts[{i}]") for i, item in enumerate(listed)
        ]
        if any(p is None for p in prompts):
            ok = False
        settings["prompts"] = prompts
        for key in ("name", "brand", "default_locale"):
            if key in table:
                settings[key] = self.text(table[key], f"{path}.{key}")
                ok = ok and settings[key] is not None
        if "recording" in table:
            settings["recording"] = self.flag(table["recording"], f"{path}.recording")
            ok = ok and settings["recording"] is not None
        for key in ("retry_text", "closing", "ending", "call_back"):
            if key in table:
                settings[key] = self.texts(table[key], f"{path}.{key}")
                ok = ok and settings[key] is not None
        if not ok:
            return None
        try:
            return CallScript(**settings)
        except PolicyError as exc:
            self.problems.extend(_relocated(exc.problems, path))
            return None


def _relocated(problems: Iterable[PolicyProblem], path: str) -> list[PolicyProblem]:
    """Problems found at ``script...`` moved under ``path``."""
    return [
        attrs.evolve(problem, path=path + problem.path.removeprefix("script"))
        for problem in problems
    ]


def _any_key(value: object) -> list[str]:
    return [str(key) for key in value] if isinstance(value, Mapping) else []


def _script_rules(script: CallScript, path: str) -> tuple[PolicyProblem, ...]:
    """The rules a script obeys beyond its shape, each problem located."""
    problems: list[PolicyProblem] = []

    def problem(where: str, message: str) -> None:
        problems.append(PolicyProblem(path=where, message=message))

    if not script.prompts:
        problem(f"{path}.prompts", "a script needs at least one prompt")
        return tuple(problems)
    first = script.prompts[0]
    if script.recording and not (
        first.kind is PromptKind.DISCLOSURE and first.recording_notice
    ):
        problem(
            f"{path}.prompts[0]",
            "the call is recorded, so the first prompt must be a disclosure "
            "with recording_notice = true",
        )
    seen: dict[str, int] = {}
    for index, prompt in enumerate(script.prompts):
        where = f"{path}.prompts[{index}]"
        if prompt.id in seen:
            problem(f"{where}.id", f"duplicate prompt id {prompt.id!r}")
        seen.setdefault(prompt.id, index)
        if prompt.recording_notice and prompt.kind is not PromptKind.DISCLOSURE:
            problem(
                f"{where}.recording_notice",
                "only a disclosure gives the recording notice",
            )
        for locale, template in prompt.text.items():
            try:
                names = template_fields(template)
            except ValueError as exc:
                problem(f"{where}.text.{locale}", f"template does not parse: {exc}")
                continue
            for name in sorted(names - TEMPLATE_FIELDS):
                problem(
                    f"{where}.text.{locale}",
                    f"unknown placeholder {{{name}}} (known: {', '.join(sorted(TEMPLATE_FIELDS))})",
                )
            personal = names & PERSONAL_FIELDS
            if prompt.kind is PromptKind.IDENTITY and personal:
                problem(
                    f"{where}.text.{locale}",
                    "an identity prompt never reads personal data aloud "
                    f"({', '.join('{' + n + '}' for n in sorted(personal))}); ask for it",
                )
        if script.default_locale not in prompt.text:
            problem(
                f"{where}.text",
                f"no text for the script's default locale {script.default_locale!r}",
            )
        problems.extend(_expect_rules(prompt, where))
        if prompt.signal is not None and prompt.signal not in MISMATCH_SIGNALS:
            problem(
                f"{where}.signal",
                f"{prompt.signal!r} is not a signal a prompt raises "
                f"(one of {', '.join(sorted(MISMATCH_SIGNALS))})",
            )
        if prompt.timeout <= 0:
            problem(f"{where}.timeout", "must be positive")
    return tuple(problems)


def _expect_rules(prompt: Prompt, where: str) -> list[PolicyProblem]:
    problems: list[PolicyProblem] = []
    expect = prompt.expect

    def problem(path: str, message: str) -> None:
        problems.append(PolicyProblem(path=path, message=message))

    if prompt.kind is PromptKind.IDENTITY and expect.kind not in (
        AnswerKind.DIGITS,
        AnswerKind.SPEECH,
    ):
        problem(f"{where}.expect.kind", "an identity prompt asks for digits or speech")
    if (
        prompt.kind in (PromptKind.INTENT, PromptKind.RISK)
        and expect.kind is AnswerKind.NONE
    ):
        problem(f"{where}.expect.kind", f"a {prompt.kind.value} prompt needs an answer")
    if expect.kind is AnswerKind.DIGITS:
        if expect.source is None:
            if prompt.kind is PromptKind.IDENTITY:
                problem(f"{where}.expect.source", "say what the digits must equal")
        elif expect.source not in DIGIT_SOURCES:
            problem(
                f"{where}.expect.source",
                f"unknown source {expect.source!r} (one of {', '.join(sorted(DIGIT_SOURCES))})",
            )
    if expect.kind is AnswerKind.YES_NO:
        for key in ("yes_key", "no_key"):
            if getattr(expect, key) not in _KEYS or getattr(expect, key) == "#":
                problem(f"{where}.expect.{key}", "must be one key: 0-9 or *")
        if expect.yes_key == expect.no_key:
            problem(f"{where}.expect.no_key", "yes and no need different keys")
        if expect.answer not in ("yes", "no"):
            problem(f"{where}.expect.answer", "must be 'yes' or 'no'")
    if expect.kind is AnswerKind.SPEECH:
        if expect.source is not None and expect.source not in SPEECH_SOURCES:
            problem(
                f"{where}.expect.source", "speech keywords come only from 'purpose'"
            )
        if not expect.keywords and expect.source is None:
            problem(
                f"{where}.expect.keywords",
                "give keywords (per locale) or source = 'purpose'",
            )
    return problems


def script_problems(
    value: object, path: str, *, name: str = "script"
) -> list[PolicyProblem]:
    """Every located problem of a script table from a policy document (empty when sound)."""
    reader = _Reader()
    reader.script(value, path, name=name)
    return reader.problems


def _window(reader: _Reader, value: object, path: str) -> CallingWindow | None:
    table = reader.table(value, path, _WINDOW_KEYS)
    if table is None:
        return None
    settings: dict[str, Any] = {}
    ok = True
    for key in ("start", "end"):
        if key in table:
            text = reader.text(table[key], f"{path}.{key}")
            if text is None:
                ok = False
                continue
            try:
                settings[key] = parse_clock(text, allow_end_of_day=key == "end")
            except ValueError as exc:
                reader.problem(f"{path}.{key}", str(exc))
                ok = False
    if "weekdays" in table:
        days = table["weekdays"]
        if not isinstance(days, list) or not all(
            isinstance(d, str) and d.lower()[:3] in _WEEKDAY_NAMES for d in days
        ):
            reader.problem(
                f"{path}.weekdays", "expected a list of day names such as 'mon'"
            )
            ok = False
        else:
            settings["weekdays"] = {_WEEKDAY_NAMES[d.lower()[:3]] for d in days}
    if "blocked_dates" in table:
        dates = table["blocked_dates"]
        parsed = []
        if not isinstance(dates, list):
            reader.problem(f"{path}.blocked_dates", "expected a list of dates")
            ok = False
        else:
            from datetime import date  # noqa: PLC0415 - only here

            for index, item in enumerate(dates):
                if isinstance(item, date):
                    parsed.append(item)
                    continue
                try:
                    parsed.append(date.fromisoformat(str(item)))
                except ValueError:
                    reader.problem(
                        f"{path}.blocked_dates[{index}]",
                        f"not a date: {item!r} (YYYY-MM-DD)",
                    )
                    ok = False
            settings["blocked_dates"] = parsed
    if not ok:
        return None
    start: time = settings.get("start", time(8, 0))
    end: time | None = settings.get("end", time(21, 0))
    if end is not None and end <= start:
        reader.problem(f"{path}.end", f"must be after start ({start:%H:%M})")
        return None
    if "weekdays" in settings and not settings["weekdays"]:
        reader.problem(f"{path}.weekdays", "allow at least one day")
        return None
    return CallingWindow(**settings)


def _read_options(  # noqa: PLR0915 - one pass over every option
    options: Mapping[str, Any], scripts: Mapping[str, Any], path: str
) -> tuple[PhoneCallOptions | None, list[PolicyProblem]]:
    reader = _Reader()
    for key in options:
        if key not in _OPTION_KEYS:
            reader.problem(
                f"{path}.{key}",
                f"unknown option; known: {', '.join(sorted(_OPTION_KEYS))}",
            )
    settings: dict[str, Any] = {}
    recording = options.get("recording")
    if recording is not None and reader.flag(recording, f"{path}.recording") is None:
        recording = None
    brand = options.get("brand")
    if brand is not None and reader.text(brand, f"{path}.brand") is None:
        brand = None
    script_value = options.get("script")
    script: CallScript | None
    if script_value is None:
        script = CallScript.default(
            brand=brand or "", recording=True if recording is None else recording
        )
    elif isinstance(script_value, str):
        if script_value not in scripts:
            known = ", ".join(sorted(scripts)) or "none"
            reader.problem(
                f"{path}.script", f"no script named {script_value!r} (known: {known})"
            )
            script = None
        else:
            script = reader.script(
                scripts[script_value], f"scripts.{script_value}", name=script_value
            )
    else:
        script = reader.script(script_value, f"{path}.script", name="script")
    if script is not None and recording is not None and recording != script.recording:
        try:
            script = attrs.evolve(script, recording=recording)
        except PolicyError as exc:
            reader.problems.extend(_relocated(exc.problems, f"{path}.script"))
            script = None
    if script is not None and brand is not None and script_value is not None:
        script = attrs.evolve(script, brand=brand)
    if "calling_window" in options:
        settings["calling_window"] = _window(
            reader, options["calling_window"], f"{path}.calling_window"
        )
    schedule: dict[str, Any] = {}
    if "retry_schedule" in options:
        listed = options["retry_schedule"]
        if not isinstance(listed, list):
            reader.problem(
                f"{path}.retry_schedule",
                "expected a list such as ['30m', '2h', 'next day 10:00']",
            )
        else:
            entries = []
            for index, item in enumerate(listed):
                try:
                    entries.append(parse_schedule_entry(item))
                except ValueError as exc:
                    reader.problem(
                        f"{path}.retry_schedule[{index}]",
                        f"{exc}; or write 'next day 10:00'",
                    )
            schedule["retries"] = entries
    for key in ("max_attempts", "max_per_day"):
        if key in options:
            schedule[key] = reader.count(options[key], f"{path}.{key}", minimum=1)
    zone = options.get("zone", "applicant")
    if zone not in ("applicant", "phone"):
        reader.problem(f"{path}.zone", "must be 'applicant' or 'phone'")
    for key in ("ring_timeout", "time_limit", "recording_wait"):
        if key in options:
            settings[key] = reader.seconds(options[key], f"{path}.{key}")
    if "language" in options:
        settings["language"] = reader.text(options["language"], f"{path}.language")
    if "machine_detection" in options:
        settings["machine_detection"] = reader.flag(
            options["machine_detection"], f"{path}.machine_detection"
        )
    if reader.problems or script is None:
        return None, reader.problems
    return (
        PhoneCallOptions(
            script=script,
            schedule=AttemptSchedule(**schedule),
            zone=zone,
            **settings,
        ),
        [],
    )


def phone_options_problems(
    options: Mapping[str, Any], scripts: Mapping[str, Any], path: str = "options"
) -> list[PolicyProblem]:
    """Every located problem of a phone-call step's options (empty when sound)."""
    return _read_options(options, scripts, path)[1]


def phone_options(
    options: Mapping[str, Any], scripts: Mapping[str, Any] | None = None
) -> PhoneCallOptions:
    """A phone-call step's options, read and checked.

    ``options.script`` may be a table, or the name of one of ``scripts``
    (the policy's named scripts; a policy resolves the name itself).

    Raises:
        PolicyError: every located problem.
    """
    read, problems = _read_options(options, scripts or {}, "options")
    if read is None:
        raise PolicyError(
            message="the phone_call options are invalid", problems=tuple(problems)
        )
    return read


def schedule_text(schedule: AttemptSchedule) -> str:
    """The schedule as a policy writes it: ``30m, 2h, next day 10:00``."""
    return ", ".join(format_schedule_entry(entry) for entry in schedule.retries)


def decimal_text(value: Decimal) -> str:
    """A decimal without exponent noise, for results."""
    return format(value.normalize(), "f")

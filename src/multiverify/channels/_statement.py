"""The confirmation statement an applicant reads aloud: the loan's amount, term and fees, in their language.

Amounts, currencies, percentages, durations and dates are formatted by Babel
with the applicant's locale (CLDR data), so ``8000 CNY`` reads ``¥8,000.00``
in zh-CN and ``CN¥8,000.00`` in en. The statement names no personal data:
it may be shown, sent to a vendor and kept as evidence.
"""

from __future__ import annotations

import hashlib

import attrs
from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_percent
from babel.units import format_unit

from .._applicant import LoanApplication
from ..exceptions import InvalidInputError

__all__ = ["Statement", "confirmation_statement"]

# Chinese punctuation: the full-width comma and full stop are the right ones here.
_COMMA = "\uff0c"
_STOP = "\u3002"


@attrs.frozen(kw_only=True)
class Statement:
    """A confirmation statement.

    Attributes:
        text: what the applicant reads aloud.
        locale: the locale it was written for, such as ``zh-CN``.
    """

    text: str
    locale: str

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the text: the evidence that this exact text was read."""
        return "sha256:" + hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _locale(tag: str) -> Locale:
    try:
        return Locale.parse(tag.replace("_", "-"), sep="-")
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise InvalidInputError(
            message=f"locale: not a locale Babel knows: {tag!r}", field="locale"
        ) from exc


def confirmation_statement(loan: LoanApplication, *, locale: str) -> Statement:
    """The statement for ``loan`` in ``locale``: Chinese for ``zh*``, English otherwise.

    It states the amount, the term and the fees, then the annual rate and
    the first repayment date when the application has them. Amounts, rates
    and dates follow the locale; the words are Simplified Chinese or English.

    >>> from decimal import Decimal
    >>> loan = LoanApplication(amount=Decimal("8000"), currency="CNY",
    ...                        term_months=12, purpose="laptop")
    >>> confirmation_statement(loan, locale="zh-CN").text[:17]
    '本人确认申请借款¥8,000.00'
    >>> confirmation_statement(loan, locale="en").text
    'I confirm that I am borrowing CN¥8,000.00 over 12 months with fees of CN¥0.00, and that I will repay on time.'

    Raises:
        InvalidInputError: Babel does not know the locale.
    """
    where = _locale(locale)
    amount = format_currency(loan.amount, loan.currency, locale=where)
    fees = format_currency(loan.fees, loan.currency, locale=where)
    # The term is a word of the sentence: it is written in the sentence's
    # language (Simplified Chinese or English), the figures in the locale's way.
    words = Locale("zh", script="Hans") if where.language == "zh" else Locale("en")
    term = format_unit(loan.term_months, "duration-month", length="long", locale=words)
    rate = (
        None
        if loan.annual_rate is None
        else format_percent(loan.annual_rate, format="#,##0.##%", locale=where)
    )
    first_due = (
        None
        if loan.repayment is None
        else format_date(loan.repayment.first_due, format="long", locale=where)
    )
    if where.language == "zh":
        parts = [f"本人确认申请借款{amount}", f"期限{term}", f"手续费{fees}"]
        if rate is not None:
            parts.append(f"年化利率{rate}")
        if first_due is not None:
            parts.append(f"首期还款日{first_due}")
        text = _COMMA.join(parts) + f"{_COMMA}并承诺按期还款{_STOP}"
    else:
        text = f"I confirm that I am borrowing {amount} over {term} with fees of {fees}"
        if rate is not None:
            text += f" at {rate} a year"
        if first_due is not None:
            text += f", first repayment due {first_due}"
        text += ", and that I will repay on time."
    return Statement(text=text, locale=locale)

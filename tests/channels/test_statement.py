"""Tests for the confirmation statement read aloud in a video signing."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from multiverify import LoanApplication, RepaymentSchedule
from multiverify.channels import Statement, confirmation_statement
from multiverify.exceptions import InvalidInputError


def loan(**overrides: object) -> LoanApplication:
    """8,000 CNY over 12 months, with overrides."""
    fields: dict[str, object] = {
        "amount": Decimal(8000),
        "currency": "CNY",
        "term_months": 12,
        "purpose": "laptop",
    }
    fields.update(overrides)
    return LoanApplication(**fields)  # type: ignore[arg-type]


class TestConfirmationStatement:
    def test_chinese(self) -> None:
        """zh-CN: yuan with the ¥ sign, months in Chinese, full-width punctuation."""
        statement = confirmation_statement(loan(), locale="zh-CN")
        assert statement.text == (
            "本人确认申请借款¥8,000.00\uff0c期限12个月\uff0c手续费¥0.00"
            "\uff0c并承诺按期还款\u3002"
        )
        assert statement.locale == "zh-CN"

    def test_english(self) -> None:
        """en: CN¥ to tell yuan from yen, plural months."""
        assert confirmation_statement(loan(), locale="en").text == (
            "I confirm that I am borrowing CN¥8,000.00 over 12 months with fees "
            "of CN¥0.00, and that I will repay on time."
        )

    def test_rate_fees_and_first_due_date(self) -> None:
        """The rate and the first repayment date are read when known, dates per locale."""
        full = loan(
            fees=Decimal("120.5"),
            annual_rate=Decimal("0.108"),
            term_months=1,
            repayment=RepaymentSchedule(
                installments=1,
                installment_amount=Decimal("8192.5"),
                first_due=date(2026, 2, 1),
            ),
        )
        assert confirmation_statement(full, locale="en").text == (
            "I confirm that I am borrowing CN¥8,000.00 over 1 month with fees of "
            "CN¥120.50 at 10.8% a year, first repayment due February 1, 2026, "
            "and that I will repay on time."
        )
        chinese = confirmation_statement(full, locale="zh_CN").text
        assert "年化利率10.8%" in chinese
        assert "首期还款日2026年2月1日" in chinese
        assert "手续费¥120.50" in chinese

    def test_other_currency_and_locale(self) -> None:
        """Another locale formats numbers its way; the wording stays English."""
        text = confirmation_statement(loan(currency="EUR"), locale="de-DE").text
        assert "8.000,00\xa0€" in text
        assert text.startswith("I confirm")
        assert " over 12 months " in text

    def test_words_follow_the_language_of_the_sentence(self) -> None:
        """The term is never a word of another language inside the sentence."""
        assert " over 12 months " in confirmation_statement(loan(), locale="fr").text
        taiwan = confirmation_statement(loan(), locale="zh-TW").text
        assert "期限12个月" in taiwan

    def test_unknown_locale(self) -> None:
        """A locale Babel does not know is a typed error naming the field."""
        with pytest.raises(InvalidInputError) as info:
            confirmation_statement(loan(), locale="xx-??")
        assert info.value.field == "locale"

    def test_digest(self) -> None:
        """The digest is the SHA-256 of the exact text."""
        assert Statement(text="abc", locale="en").digest == (
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )

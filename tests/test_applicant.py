"""Tests for the applicant values: validation, normalisation, masking and facts."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal

import attrs
import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiverify import (
    Address,
    Applicant,
    Consent,
    Contact,
    LoanApplication,
    RepaymentSchedule,
    _applicant,
    normalize_phone,
)
from multiverify.exceptions import InvalidInputError

CN_MOBILE = "+8613800138000"


def make_loan(**overrides: object) -> LoanApplication:
    fields: dict[str, object] = {
        "amount": "50000",
        "currency": "CNY",
        "term_months": 12,
        "purpose": "home renovation",
    }
    fields.update(overrides)
    return LoanApplication(**fields)  # type: ignore[arg-type]


def make_applicant(**overrides: object) -> Applicant:
    fields: dict[str, object] = {
        "applicant_id": "app-1",
        "name": "Zhang Wei",
        "national_id": "110101199003074578",
        "phone": CN_MOBILE,
        "date_of_birth": date(1990, 3, 7),
        "timezone": "Asia/Shanghai",
        "loan": make_loan(),
    }
    fields.update(overrides)
    return Applicant(**fields)  # type: ignore[arg-type]


class TestNormalizePhone:
    def test_e164_chinese_mobile_is_kept(self) -> None:
        """A valid Chinese mobile in E.164 comes back unchanged."""
        assert normalize_phone(CN_MOBILE) == CN_MOBILE

    @pytest.mark.parametrize(
        "typed",
        ["+86 138 0013 8000", "+86-138-0013-8000", "+86 (138) 0013 8000"],
    )
    def test_international_formatting_is_stripped(self, typed: str) -> None:
        """Spaces, dashes and brackets are dropped from an international number."""
        assert normalize_phone(typed) == CN_MOBILE

    def test_national_number_is_read_with_its_region(self) -> None:
        """A national number becomes E.164 when its region is given."""
        assert normalize_phone("138 0013 8000", region="CN") == CN_MOBILE

    def test_region_is_case_insensitive(self) -> None:
        """A lower-case region code reads the national number like an upper-case one."""
        assert normalize_phone("13800138000", region="cn") == CN_MOBILE

    def test_other_countries_are_normalised(self) -> None:
        """A US number is normalised to E.164 too."""
        assert normalize_phone("(202) 555-0143", region="US") == "+12025550143"

    def test_national_number_without_region_is_rejected(self) -> None:
        """Without a ``+`` or a region the number cannot be read."""
        with pytest.raises(InvalidInputError) as info:
            normalize_phone("13800138000")
        assert info.value.field == "phone"
        assert "not a phone number" in str(info.value)

    @pytest.mark.parametrize("garbage", ["", "not a number", "+", "++86"])
    def test_unparseable_text_is_rejected(self, garbage: str) -> None:
        """Text that is not a number raises ``InvalidInputError`` naming the field."""
        with pytest.raises(InvalidInputError) as info:
            normalize_phone(garbage)
        assert info.value.field == "phone"

    @pytest.mark.parametrize("number", ["+861380013800", "+86138001380001", "+8612345"])
    def test_invalid_number_is_rejected(self, number: str) -> None:
        """A number that parses but is not valid for its region is rejected."""
        with pytest.raises(InvalidInputError) as info:
            normalize_phone(number)
        assert info.value.field == "phone"
        assert "not a valid phone number" in str(info.value)

    def test_non_text_is_rejected(self) -> None:
        """A number given as an int raises ``InvalidInputError``, not ``TypeError``."""
        with pytest.raises(InvalidInputError) as info:
            normalize_phone(8613800138000)  # type: ignore[arg-type]
        assert info.value.field == "phone"

    def test_region_that_is_not_text_is_rejected(self) -> None:
        """A region given as a calling code is an ``InvalidInputError``, not an AttributeError."""
        with pytest.raises(InvalidInputError) as info:
            normalize_phone("13800138000", region=86)  # type: ignore[arg-type]
        assert info.value.field == "phone"
        assert "the region must be text" in str(info.value)

    @pytest.mark.parametrize(
        "typed",
        [
            "+1 202 555 0143 ext. 12",
            "+1 202-555-0143 x12",
            "+12025550143;ext=12",
            "+86 138 0013 8000 #123",
        ],
    )
    def test_extension_is_rejected(self, typed: str) -> None:
        """A number with an extension is refused, not silently cut to the main line."""
        with pytest.raises(InvalidInputError) as info:
            normalize_phone(typed)
        assert info.value.field == "phone"
        assert "extension" in str(info.value)

    def test_error_names_the_given_field(self) -> None:
        """The ``field`` argument is the name reported in the error and message."""
        with pytest.raises(InvalidInputError) as info:
            normalize_phone("12", field="guardian.phone")
        assert info.value.field == "guardian.phone"
        assert str(info.value).startswith("guardian.phone: ")

    def test_error_chains_the_parse_error(self) -> None:
        """The parser's own error is kept as the cause."""
        with pytest.raises(InvalidInputError) as info:
            normalize_phone("abc")
        assert info.value.__cause__ is not None


class TestLoanApplication:
    @pytest.mark.parametrize(
        ("given", "expected"),
        [
            ("50000", Decimal(50000)),
            ("1234.56", Decimal("1234.56")),
            (" 99.5 ", Decimal("99.5")),
            (50000, Decimal(50000)),
            (Decimal("7.25"), Decimal("7.25")),
        ],
    )
    def test_amount_becomes_decimal(self, given: object, expected: Decimal) -> None:
        """Strings, ints and decimals become the same ``Decimal`` amount."""
        loan = make_loan(amount=given)
        assert isinstance(loan.amount, Decimal)
        assert loan.amount == expected

    def test_float_amount_keeps_its_shortest_decimal_form(self) -> None:
        """A float converts via its repr, so 0.1 is 0.1 and not its binary expansion."""
        loan = make_loan(amount=0.1)
        assert loan.amount == Decimal("0.1")
        assert str(loan.amount) == "0.1"

    @given(st.floats(min_value=0.01, max_value=1e12, allow_nan=False))
    def test_float_amount_round_trips(self, value: float) -> None:
        """A positive float amount converts to a decimal equal to the float."""
        assert float(make_loan(amount=value).amount) == value

    @pytest.mark.parametrize("bad", ["abc", "", "1,000", "12..5", "1e", [1], {}, b"1"])
    def test_invalid_amount_names_the_field(self, bad: object) -> None:
        """Text or objects that are not amounts raise ``InvalidInputError`` for ``amount``."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(amount=bad)
        assert info.value.field == "amount"
        assert "not a decimal amount" in str(info.value)

    @pytest.mark.parametrize("flag", [True, False])
    def test_bool_amount_is_rejected(self, flag: bool) -> None:
        """A bool is not taken for the amount 1 or 0."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(amount=flag)
        assert info.value.field == "amount"

    @pytest.mark.parametrize(
        "bad",
        [
            "NaN",
            "sNaN",
            "Infinity",
            "-Infinity",
            float("nan"),
            float("inf"),
            Decimal("NaN"),
        ],
    )
    def test_non_finite_amount_is_rejected(self, bad: object) -> None:
        """NaN and infinities are refused as amounts."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(amount=bad)
        assert info.value.field == "amount"
        assert "must be finite" in str(info.value)

    @pytest.mark.parametrize(
        ("field", "bad"),
        [
            ("amount", Decimal("1e400")),
            ("amount", "1e15"),
            pytest.param("amount", 10**400, id="amount-int"),
            ("fees", Decimal("1e400")),
            ("annual_rate", Decimal("1e400")),
        ],
    )
    def test_absurd_amount_is_rejected(self, field: str, bad: object) -> None:
        """An amount of a quadrillion or more is refused: its facts would be infinite."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(**{field: bad})
        assert info.value.field == field
        assert "must be less than 10^15" in str(info.value)

    def test_largest_amount_is_accepted(self) -> None:
        """An amount just under a quadrillion is kept, and its facts are finite."""
        loan = make_loan(amount="999999999999999.99")
        assert loan.amount == Decimal("999999999999999.99")
        assert math.isfinite(loan.facts()["amount"])

    @pytest.mark.parametrize("bad", [0, "0", "-1", Decimal("-0.01")])
    def test_amount_must_be_positive(self, bad: object) -> None:
        """A zero or negative amount is rejected naming ``amount``."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(amount=bad)
        assert info.value.field == "amount"
        assert "must be positive" in str(info.value)

    @pytest.mark.parametrize("bad", [0, -3])
    def test_term_must_be_positive(self, bad: int) -> None:
        """A zero or negative term is rejected naming ``term_months``."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(term_months=bad)
        assert info.value.field == "term_months"
        assert "must be positive" in str(info.value)

    @pytest.mark.parametrize("bad", ["12", 12.0, True, None])
    def test_term_must_be_a_whole_number(self, bad: object) -> None:
        """A term that is not an int raises ``InvalidInputError``, not ``TypeError``."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(term_months=bad)
        assert info.value.field == "term_months"
        assert "whole number" in str(info.value)

    @pytest.mark.parametrize("currency", ["CNY", "USD", "EUR", "VND", "XOF", "BGN"])
    def test_iso_currency_is_accepted(self, currency: str) -> None:
        """An ISO 4217 code of a currency in use, or once in use (BGN), is accepted."""
        assert make_loan(currency=currency).currency == currency

    @pytest.mark.parametrize("bad", ["XYZ", "ABC", "RMB", "XXX", "XTS", "XAU", "CNH"])
    def test_unknown_currency_code_is_rejected(self, bad: str) -> None:
        """Three letters that are no ISO 4217 legal tender are rejected naming ``currency``."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(currency=bad)
        assert info.value.field == "currency"
        assert f"{bad!r} is not an ISO 4217 currency" in str(info.value)

    @pytest.mark.parametrize("bad", ["cny", "CN", "CNYY", "C1Y", "", "CNY\n", " CNY"])
    def test_invalid_currency_names_the_field(self, bad: str) -> None:
        """Anything but exactly three upper-case letters is rejected naming ``currency``."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(currency=bad)
        assert info.value.field == "currency"
        assert repr(bad) in str(info.value)

    @pytest.mark.parametrize("bad", ["", "   ", "\t\n"])
    def test_purpose_must_not_be_blank(self, bad: str) -> None:
        """A blank purpose is rejected naming ``purpose``."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(purpose=bad)
        assert info.value.field == "purpose"

    def test_defaults(self) -> None:
        """Fees default to zero; rate and repayment to ``None``."""
        loan = make_loan()
        assert loan.fees == Decimal(0)
        assert loan.annual_rate is None
        assert loan.repayment is None

    def test_fees_may_be_zero_but_not_negative(self) -> None:
        """Zero fees are fine; negative fees are rejected naming ``fees``."""
        assert make_loan(fees="0").fees == Decimal(0)
        with pytest.raises(InvalidInputError) as info:
            make_loan(fees="-0.01")
        assert info.value.field == "fees"
        assert "must not be negative" in str(info.value)

    def test_invalid_fees_names_the_field(self) -> None:
        """Fees that are not an amount are reported as ``fees``."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(fees="free")
        assert info.value.field == "fees"

    def test_annual_rate_is_converted_when_given(self) -> None:
        """A rate becomes a decimal; ``None`` stays ``None``."""
        assert make_loan(annual_rate=0.0365).annual_rate == Decimal("0.0365")
        assert make_loan(annual_rate=None).annual_rate is None

    def test_invalid_annual_rate_names_the_field(self) -> None:
        """A rate that is not a number is reported as ``annual_rate``."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(annual_rate="high")
        assert info.value.field == "annual_rate"

    def test_is_frozen(self) -> None:
        """A loan application cannot be changed after it is built."""
        loan = make_loan()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            loan.amount = Decimal(1)  # type: ignore[misc]

    def test_facts_without_repayment(self) -> None:
        """Facts are plain floats and strings, with no repayment figures."""
        loan = make_loan(amount="50000.50", fees="12.5", annual_rate="0.0365")
        assert loan.facts() == {
            "amount": 50000.5,
            "currency": "CNY",
            "term_months": 12,
            "purpose": "home renovation",
            "fees": 12.5,
            "annual_rate": 0.0365,
            "installments": None,
            "installment_amount": None,
        }

    def test_facts_with_repayment(self) -> None:
        """A repayment schedule adds the installment count and amount."""
        schedule = RepaymentSchedule(
            installments=12, installment_amount="4250.75", first_due=date(2025, 2, 1)
        )
        facts = make_loan(repayment=schedule).facts()
        assert facts["installments"] == 12
        assert facts["installment_amount"] == 4250.75
        assert facts["annual_rate"] is None
        assert all(isinstance(facts[k], float) for k in ("amount", "fees"))


class TestRepaymentSchedule:
    def test_builds_with_defaults(self) -> None:
        """The amount becomes a decimal and the frequency defaults to monthly."""
        schedule = RepaymentSchedule(
            installments=6, installment_amount=100, first_due=date(2025, 1, 1)
        )
        assert schedule.installment_amount == Decimal(100)
        assert schedule.frequency == "monthly"

    @pytest.mark.parametrize("bad", [0, -1])
    def test_installments_must_be_positive(self, bad: int) -> None:
        """Zero or negative installments are reported as ``repayment.installments``."""
        with pytest.raises(InvalidInputError) as info:
            RepaymentSchedule(
                installments=bad, installment_amount=1, first_due=date(2025, 1, 1)
            )
        assert info.value.field == "repayment.installments"

    def test_installments_must_be_a_whole_number(self) -> None:
        """A string count is reported as ``repayment.installments``."""
        with pytest.raises(InvalidInputError) as info:
            RepaymentSchedule(
                installments="6",  # type: ignore[arg-type]
                installment_amount=1,
                first_due=date(2025, 1, 1),
            )
        assert info.value.field == "repayment.installments"

    @pytest.mark.parametrize(
        ("bad", "message"), [("-1", "must not be negative"), ("x", "not a decimal")]
    )
    def test_installment_amount_errors_name_the_field(
        self, bad: str, message: str
    ) -> None:
        """A negative or non-numeric installment is reported with its dotted field."""
        with pytest.raises(InvalidInputError) as info:
            RepaymentSchedule(
                installments=6, installment_amount=bad, first_due=date(2025, 1, 1)
            )
        assert info.value.field == "repayment.installment_amount"
        assert message in str(info.value)


class TestAddress:
    def test_lines_become_a_tuple(self) -> None:
        """Address lines given as a list are stored as a tuple."""
        address = Address(lines=["1 Main St", "Apt 2"], city="Beijing")
        assert address.lines == ("1 Main St", "Apt 2")

    def test_one_line_as_text_is_rejected(self) -> None:
        """A string is not taken for one line per character."""
        with pytest.raises(InvalidInputError) as info:
            Address(lines="12 Dongsi North Street", city="Beijing")  # type: ignore[arg-type]
        assert info.value.field == "address.lines"
        assert str(info.value) == "address.lines: expected a list, got str"

    def test_lines_must_be_text(self) -> None:
        """A line that is not text is named, before redact would trip on it."""
        with pytest.raises(InvalidInputError) as info:
            Address(lines=["12 Dongsi", 5], city="Beijing")  # type: ignore[list-item]
        assert info.value.field == "address.lines"
        assert str(info.value).startswith("address.lines[1]: ")

    def test_repr_hides_personal_fields(self) -> None:
        """Lines, city and postal code stay out of the repr; region and country show."""
        address = Address(
            lines=["88 Jianguo Road"],
            city="Chaoyang",
            region="Beijing",
            postal_code="100022",
            country="CN",
        )
        text = repr(address)
        for secret in ("88 Jianguo Road", "Chaoyang", "100022"):
            assert secret not in text
        assert "Beijing" in text
        assert "'CN'" in text


class TestContact:
    def test_phone_is_normalised(self) -> None:
        """A contact's phone is normalised to E.164."""
        contact = Contact(name="Li Na", relation="sister", phone="+86 139 0013 9000")
        assert contact.phone == "+8613900139000"

    def test_invalid_phone_names_contacts_phone(self) -> None:
        """A bad contact phone is reported as ``contacts.phone``."""
        with pytest.raises(InvalidInputError) as info:
            Contact(name="Li Na", relation="sister", phone="12345")
        assert info.value.field == "contacts.phone"
        assert str(info.value).startswith("contacts.phone: ")

    def test_repr_masks_name_and_phone(self) -> None:
        """The contact's name and number are masked; the relation is shown."""
        text = repr(Contact(name="Li Na", relation="sister", phone="+8613900139000"))
        assert "Li Na" not in text
        assert "13900139000" not in text
        assert "+86*******9000" in text
        assert "sister" in text


class TestApplicant:
    def test_phone_is_normalised(self) -> None:
        """The applicant's phone is stored in E.164."""
        assert make_applicant(phone="+86 138-0013-8000").phone == CN_MOBILE

    def test_national_phone_is_rejected(self) -> None:
        """An applicant's phone must be international; the error names ``phone``."""
        with pytest.raises(InvalidInputError) as info:
            make_applicant(phone="13800138000")
        assert info.value.field == "phone"

    def test_contacts_become_a_tuple(self) -> None:
        """Contacts given as a list are stored as a tuple."""
        contact = Contact(name="Li Na", relation="sister", phone="+8613900139000")
        assert make_applicant(contacts=[contact]).contacts == (contact,)

    def test_invalid_contact_phone_surfaces_from_applicant(self) -> None:
        """Building a contact inside an applicant reports ``contacts.phone``."""
        with pytest.raises(InvalidInputError) as info:
            make_applicant(
                contacts=[Contact(name="Li Na", relation="sister", phone="+86123")]
            )
        assert info.value.field == "contacts.phone"

    @pytest.mark.parametrize("field", ["applicant_id", "name", "national_id"])
    def test_blank_text_fields_are_rejected(self, field: str) -> None:
        """Blank id, name or national id is rejected and named."""
        with pytest.raises(InvalidInputError) as info:
            make_applicant(**{field: "  "})
        assert info.value.field == field

    @pytest.mark.parametrize("zone", ["Asia/Shanghai", "UTC", "America/New_York"])
    def test_known_timezone_is_accepted(self, zone: str) -> None:
        """An IANA zone name is accepted."""
        assert make_applicant(timezone=zone).timezone == zone

    @pytest.mark.parametrize(
        "bad",
        [
            "Mars/Olympus",
            "asia/shanghai",
            "",
            "/etc/passwd",
            "../x",
            "../etc",
            None,
            "America",
            "America/",
            "Asia/Shang\x00hai",
            "Asia/" + "x" * 5000,
            "zone.tab",
        ],
    )
    def test_unknown_timezone_names_the_field(self, bad: object) -> None:
        """Unknown, malformed or non-text zones are rejected naming ``timezone``."""
        with pytest.raises(InvalidInputError) as info:
            make_applicant(timezone=bad)
        assert info.value.field == "timezone"
        assert "unknown IANA time zone" in str(info.value)

    def test_repr_hides_personal_data(self) -> None:
        """The repr never shows the name, national id, full phone or birth date."""
        address = Address(lines=["88 Jianguo Road"], city="Chaoyang")
        contact = Contact(name="Li Na", relation="sister", phone="+8613900139000")
        applicant = make_applicant(address=address, contacts=[contact])
        text = repr(applicant)
        for secret in (
            "Zhang Wei",
            "Zhang",
            "110101199003074578",
            "1101011990",
            CN_MOBILE,
            "13800138000",
            "1990",
            "1990-03-07",
            "date(",
            "88 Jianguo Road",
            "Li Na",
            "13900139000",
        ):
            assert secret not in text
        assert "app-1" in text
        assert "+86*******8000" in text
        assert "**************4578" in text
        assert "****-**-**" in text

    @given(
        name=st.lists(
            st.text(
                st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
                min_size=1,
                max_size=4,
            ),
            min_size=1,
            max_size=3,
        )
        .map(" ".join)
        .filter(lambda name: len(name) >= 2),
        national_id=st.from_regex(r"[0-9X]{10,18}", fullmatch=True),
    )
    def test_repr_never_contains_name_or_id(self, name: str, national_id: str) -> None:
        """For any name longer than one character and any long id, neither is in the repr."""
        text = repr(make_applicant(name=name, national_id=national_id))
        assert name not in text
        assert national_id not in text

    @pytest.mark.parametrize(
        ("born", "on", "age"),
        [
            (date(1990, 3, 7), date(2020, 3, 6), 29),
            (date(1990, 3, 7), date(2020, 3, 7), 30),
            (date(1990, 3, 7), date(2020, 3, 8), 30),
            (date(1990, 3, 7), date(2020, 12, 31), 30),
            (date(1990, 12, 31), date(2021, 1, 1), 30),
            (date(1990, 3, 7), date(1990, 3, 7), 0),
        ],
    )
    def test_age_on_counts_whole_years(self, born: date, on: date, age: int) -> None:
        """Age goes up on the birthday, not the day before."""
        assert make_applicant(date_of_birth=born).age_on(on) == age

    @pytest.mark.parametrize(
        ("on", "age"),
        [
            (date(2023, 2, 28), 22),  # non-leap year: not yet on 28 Feb
            (date(2023, 3, 1), 23),  # ...but on 1 March
            (date(2024, 2, 28), 23),  # leap year: the day before
            (date(2024, 2, 29), 24),  # leap year: on the day itself
        ],
    )
    def test_age_on_for_leap_day_birthday(self, on: date, age: int) -> None:
        """Someone born on 29 Feb turns a year older on 1 March in common years."""
        applicant = make_applicant(date_of_birth=date(2000, 2, 29))
        assert applicant.age_on(on) == age

    @given(
        born=st.dates(min_value=date(1900, 1, 1), max_value=date(2010, 12, 31)),
        years=st.integers(min_value=0, max_value=80),
    )
    def test_age_on_anniversary_is_exact(self, born: date, years: int) -> None:
        """On each birthday (1 March for leap-day births) the age is the year count."""
        try:
            anniversary = born.replace(year=born.year + years)
        except ValueError:  # 29 Feb in a common year
            anniversary = date(born.year + years, 3, 1)
        applicant = make_applicant(date_of_birth=born)
        assert applicant.age_on(anniversary) == years
        if years:
            assert applicant.age_on(date.fromordinal(anniversary.toordinal() - 1)) == (
                years - 1
            )

    def test_facts_hold_only_non_personal_values(self) -> None:
        """Facts carry id, age, phone country, zone, locale and counts, nothing personal."""
        contact = Contact(name="Li Na", relation="sister", phone="+8613900139000")
        applicant = make_applicant(
            contacts=[contact, contact],
            address=Address(lines=["88 Jianguo Road"], city="Chaoyang"),
            locale="zh-CN",
        )
        facts = applicant.facts(on=date(2025, 3, 7))
        assert facts == {
            "id": "app-1",
            "age": 35,
            "phone_country": "CN",
            "timezone": "Asia/Shanghai",
            "locale": "zh-CN",
            "contacts": 2,
            "has_address": True,
        }
        flat = repr(facts)
        for secret in ("Zhang", "110101199003074578", "13800138000", "1990", "Li Na"):
            assert secret not in flat

    def test_facts_without_address_or_contacts(self) -> None:
        """With no address or contacts the facts say so; the age uses ``on``."""
        facts = make_applicant(phone="+12025550143").facts(on=date(2025, 3, 6))
        assert facts["has_address"] is False
        assert facts["contacts"] == 0
        assert facts["phone_country"] == "US"
        assert facts["age"] == 34
        assert facts["locale"] == "en"

    def test_is_frozen(self) -> None:
        """An applicant cannot be changed after it is built."""
        applicant = make_applicant()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            applicant.name = "Other"  # type: ignore[misc]

    def test_personal_fields_are_marked(self) -> None:
        """Exactly the personal fields carry the ``personal`` metadata flag."""
        personal = {
            field.name
            for field in attrs.fields(Applicant)
            if field.metadata.get("personal")
        }
        assert personal == {
            "name",
            "national_id",
            "phone",
            "date_of_birth",
            "address",
            "contacts",
            "client_ip",
        }

    def test_client_ip_is_normalised(self) -> None:
        """The client IP is optional, normalised, and left out of the repr."""
        assert make_applicant().client_ip is None
        applicant = attrs.evolve(make_applicant(), client_ip=" 2001:DB8::1 ")
        assert applicant.client_ip == "2001:db8::1"
        assert "2001" not in repr(applicant)

    def test_client_ip_must_be_an_address(self) -> None:
        """Anything but an IPv4 or IPv6 address is a typed error naming the field."""
        with pytest.raises(InvalidInputError) as info:
            attrs.evolve(make_applicant(), client_ip="example.com")
        assert info.value.field == "client_ip"


class TestPhoneRegion:
    NUMBERS = (
        ("+8613800138000", None),
        ("+12025550143", None),
        ("06 6982 1234", "IT"),
        ("020 7946 0958", "GB"),
        ("+441534123456", None),
        ("+18092345678", None),
        ("+79123456789", None),
        ("+80012345678", None),
    )

    @pytest.mark.parametrize(("typed", "region"), NUMBERS)
    def test_kept_region_is_the_parsed_one(
        self, typed: str, region: str | None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The region kept at normalisation is what parsing the number finds."""
        number = normalize_phone(typed, region=region)
        kept = _applicant._REGIONS[number]
        monkeypatch.setattr(_applicant, "_REGIONS", {})
        assert _applicant._region(number) == kept
        expected = phonenumbers.region_code_for_number(phonenumbers.parse(number))
        assert kept == expected

    def test_unknown_number_is_parsed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Facts of an applicant whose number was not normalised here still work."""
        applicant = make_applicant(phone="+12025550143")
        monkeypatch.setattr(_applicant, "_REGIONS", {})
        assert applicant.facts(on=date(2025, 3, 6))["phone_country"] == "US"

    def test_the_cache_is_bounded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A full cache starts over rather than grow."""
        monkeypatch.setattr(_applicant, "_REGIONS", {})
        monkeypatch.setattr(_applicant, "_REGIONS_MAX", 1)
        normalize_phone("+8613800138000")
        normalize_phone("+12025550143")
        assert _applicant._REGIONS == {"+12025550143": "US"}


class TestFieldTypes:
    """A value of the wrong type is an `InvalidInputError` naming the field, never a crash."""

    @pytest.mark.parametrize(
        ("field", "bad"),
        [
            ("applicant_id", None),
            ("name", 5),
            ("national_id", 110101199003074578),
            ("locale", 5),
            ("locale", " "),
            ("date_of_birth", "1990-03-07"),
            ("date_of_birth", datetime(1990, 3, 7, tzinfo=UTC)),
            ("date_of_birth", None),
            ("loan", {"amount": "5000"}),
            ("loan", None),
            ("address", "12 Dongsi North Street"),
            ("contacts", [{"name": "Li Na"}]),
            ("consents", ["consent-1"]),
        ],
    )
    def test_applicant_fields(self, field: str, bad: object) -> None:
        """Each wrongly typed applicant field is named."""
        with pytest.raises(InvalidInputError) as info:
            make_applicant(**{field: bad})
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}")

    @pytest.mark.parametrize(
        ("field", "bad"),
        [
            ("currency", 156),
            ("purpose", None),
            ("annual_rate", "-0.01"),
            ("repayment", {"installments": 12}),
        ],
    )
    def test_loan_fields(self, field: str, bad: object) -> None:
        """Each wrongly typed or negative loan field is named."""
        with pytest.raises(InvalidInputError) as info:
            make_loan(**{field: bad})
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("field", "bad"),
        [("contacts", None), ("contacts", 3), ("consents", None), ("consents", 1)],
    )
    def test_collections_that_are_not_lists(self, field: str, bad: object) -> None:
        """Contacts and consents that are no list are named, not a TypeError."""
        with pytest.raises(InvalidInputError) as info:
            make_applicant(**{field: bad})
        assert info.value.field == field
        assert str(info.value).startswith(f"{field}: expected a list")

    @pytest.mark.parametrize(
        ("field", "bad"),
        [
            ("consents.purposes", 5),
            ("consents.purposes", ["kyc", 5]),
            ("consents.granted_at", "2026-01-01T00:00:00Z"),
            ("consents.expires_at", date(2027, 1, 1)),
        ],
    )
    def test_consent_fields(self, field: str, bad: object) -> None:
        """A consent's purposes are text and its times datetimes, or the field is named."""
        with pytest.raises(InvalidInputError) as info:
            Consent(reference="c-1", **{field.removeprefix("consents."): bad})  # type: ignore[arg-type]
        assert info.value.field == field

    def test_a_zero_rate_is_allowed(self) -> None:
        """An interest-free loan has a rate of zero."""
        assert make_loan(annual_rate="0").annual_rate == Decimal(0)

    @pytest.mark.parametrize(
        ("field", "bad"),
        [
            ("repayment.first_due", "2027-01-01"),
            ("repayment.frequency", ""),
        ],
    )
    def test_repayment_fields(self, field: str, bad: object) -> None:
        """The schedule's due date must be a date, its frequency non-empty text."""
        fields: dict[str, object] = {
            "installments": 12,
            "installment_amount": "500",
            "first_due": date(2027, 1, 1),
        }
        fields[field.removeprefix("repayment.")] = bad
        with pytest.raises(InvalidInputError) as info:
            RepaymentSchedule(**fields)  # type: ignore[arg-type]
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("field", "bad"),
        [("name", None), ("name", " "), ("relation", 3)],
    )
    def test_contact_fields(self, field: str, bad: object) -> None:
        """A contact's name and relation are checked and named."""
        fields: dict[str, object] = {
            "name": "Li Na",
            "relation": "sister",
            "phone": "+8613900139000",
        }
        fields[field] = bad
        with pytest.raises(InvalidInputError) as info:
            Contact(**fields)  # type: ignore[arg-type]
        assert info.value.field == f"contacts.{field}"

    @pytest.mark.parametrize("field", ["city", "region", "postal_code", "country"])
    def test_address_fields(self, field: str) -> None:
        """Address parts must be text."""
        fields: dict[str, object] = {"lines": ["1 Main Street"], "city": "Beijing"}
        fields[field] = 100000
        with pytest.raises(InvalidInputError) as info:
            Address(**fields)  # type: ignore[arg-type]
        assert info.value.field == f"address.{field}"


class TestRedact:
    def test_every_personal_value_is_masked(self) -> None:
        """Phone (three forms), ID, name, birth date, address and contacts are masked."""
        applicant = make_applicant(
            address=Address(
                lines=["88 Jianguo Road"], city="Beijing", postal_code="100022"
            ),
            contacts=[Contact(name="Li Na", relation="sister", phone="+8613900139000")],
        )
        text = (
            "to +8613800138000 / 8613800138000 / 13800138000 for Zhang Wei, "
            "id 110101199003074578, born 1990-03-07, at 88 Jianguo Road 100022; "
            "ref Li Na on 13900139000"
        )
        assert applicant.redact(text) == (
            "to +86*******8000 / +86*******8000 / +86*******8000 for Z**** W**, "
            "id **************4578, born ****-**-**, at *** ***; "
            "ref L** N** on +86*******9000"
        )

    def test_text_without_personal_values_is_unchanged(self) -> None:
        """Text that quotes nobody comes back as it was."""
        assert make_applicant().redact("HTTP 503 from upstream") == (
            "HTTP 503 from upstream"
        )

    def test_redacting_twice_changes_nothing_more(self) -> None:
        """Masks hold no personal value, so redaction is idempotent."""
        applicant = make_applicant()
        once = applicant.redact(f"{applicant.phone} {applicant.name}")
        assert applicant.redact(once) == once

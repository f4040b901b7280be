"""Tests for the document holder: keyed digests of what a vendor read, compared with the applicant."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from multiverify import Applicant, LoanApplication
from multiverify.exceptions import ProviderResponseError
from multiverify.providers import (
    DocumentHolder,
    HolderKey,
    IdentityMatch,
    MatchResult,
    compare_holder,
)

KEY = HolderKey("abcdef12-abcd-abcd-abcd-abcdef012345")
MATCH, NO, UNKNOWN = MatchResult.MATCH, MatchResult.NO_MATCH, MatchResult.NOT_CHECKED


def applicant(
    name: str = "Wang Fang",
    national_id: str = "11010119900307242X",
    born: date = date(1990, 3, 7),
) -> Applicant:
    """An applicant borrowing 8,000 CNY."""
    return Applicant(
        applicant_id="a-42",
        name=name,
        national_id=national_id,
        phone="+8613800138000",
        date_of_birth=born,
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount=Decimal(8000), currency="CNY", term_months=12, purpose="laptop"
        ),
    )


def holder(**fields: Any) -> DocumentHolder:
    """The holder Veriff read: Wang Fang's card unless ``fields`` say otherwise."""
    read: dict[str, Any] = {
        "given_name": "FANG",
        "family_name": "WANG",
        "national_id": "11010119900307242X",
        "date_of_birth": "1990-03-07",
    }
    if "full_name" in fields:
        read.update(given_name=None, family_name=None)
    read.update(fields)
    return DocumentHolder.read(KEY, **read)


def fields(match: IdentityMatch) -> tuple[MatchResult, MatchResult, MatchResult]:
    return match.name, match.national_id, match.date_of_birth


class TestCompare:
    def test_match(self) -> None:
        """The applicant's own document matches on every field."""
        assert fields(compare_holder(holder(), applicant(), KEY)) == (MATCH,) * 3

    @pytest.mark.parametrize(
        ("changed", "expected"),
        [
            ({"given_name": "LEI"}, (NO, MATCH, MATCH)),
            ({"family_name": "ZHAO"}, (NO, MATCH, MATCH)),
            ({"national_id": "440305199606306313"}, (MATCH, NO, MATCH)),
            ({"date_of_birth": "1996-06-30"}, (MATCH, MATCH, NO)),
        ],
    )
    def test_each_field_mismatches(
        self, changed: dict[str, str], expected: tuple[MatchResult, ...]
    ) -> None:
        """Each field that differs is a mismatch of that field alone."""
        assert fields(compare_holder(holder(**changed), applicant(), KEY)) == expected

    def test_missing_fields_are_unknown(self) -> None:
        """A field Veriff did not send is not checked, never a mismatch."""
        empty = DocumentHolder.read(KEY)
        assert fields(compare_holder(empty, applicant(), KEY)) == (UNKNOWN,) * 3
        partial = holder(national_id=None, date_of_birth="07/03/1990")
        assert fields(compare_holder(partial, applicant(), KEY)) == (
            MATCH,
            UNKNOWN,
            UNKNOWN,
        )

    @pytest.mark.parametrize(
        ("read", "mine"),
        [
            ({"given_name": "fang ", "family_name": "  wang"}, "WANG   FANG"),
            ({"given_name": "José-María", "family_name": "O'Neil"}, "jose maria oneil"),
            ({"given_name": "Anna Maria", "family_name": "Schmidt"}, "Anna Schmidt"),
            ({"full_name": "FANG WANG"}, "Wang Fang"),
            ({"given_name": "Jürgen", "family_name": "Groß"}, "Jurgen Gross"),
        ],
    )
    def test_names_normalised(self, read: dict[str, str], mine: str) -> None:
        """Case, spacing, accents, punctuation and word order do not matter; extra document names are allowed."""
        assert compare_holder(holder(**read), applicant(name=mine), KEY).name is MATCH

    @pytest.mark.parametrize(
        ("read", "mine"),
        [
            ({"given_name": "Anna", "family_name": "Schmidt"}, "Anna"),
            ({"given_name": "Anna", "family_name": "Schmidt"}, "Anna Maria Schmidt"),
            ({"given_name": "Anna Maria", "family_name": "Schmidt"}, "Anna Maria"),
        ],
    )
    def test_names_that_differ(self, read: dict[str, str], mine: str) -> None:
        """A lone given name, a word not on the document, or the family name left out: no match."""
        assert compare_holder(holder(**read), applicant(name=mine), KEY).name is NO

    @pytest.mark.parametrize(
        ("read", "mine", "expected"),
        [
            ({"given_name": "芳", "family_name": "王"}, "王芳", MATCH),
            ({"given_name": "芳", "family_name": "王"}, "王 芳", MATCH),
            ({"given_name": "王", "family_name": "芳"}, "王芳", MATCH),
            ({"full_name": "王芳"}, "王芳", MATCH),
            ({"given_name": "芳芳", "family_name": "王"}, "王芳", NO),
            ({"given_name": "伟明", "family_name": "张"}, "张伟", NO),
            ({"given_name": "娜", "family_name": "欧阳"}, "欧阳娜", MATCH),
            ({"given_name": "热合曼", "family_name": "阿卜杜"}, "阿卜杜·热合曼", MATCH),
            ({"given_name": "芳", "family_name": "王"}, "Wang Fang", UNKNOWN),
            ({"given_name": "FANG", "family_name": "WANG"}, "王芳", UNKNOWN),
        ],
    )
    def test_chinese_names(
        self, read: dict[str, str], mine: str, expected: MatchResult
    ) -> None:
        """CJK names compare whole (no first/last split); names in different scripts are not compared."""
        assert (
            compare_holder(holder(**read), applicant(name=mine), KEY).name is expected
        )

    @pytest.mark.parametrize(
        "number", ["11010119900307242x", "110101 19900307 242X", "110101-19900307-242X"]
    )
    def test_id_numbers_normalised(self, number: str) -> None:
        """ID numbers compare without case, spaces or dashes."""
        got = compare_holder(holder(national_id=number), applicant(), KEY)
        assert got.national_id is MATCH

    def test_applicant_without_a_number(self) -> None:
        """An applicant's national ID with no letter or digit is not compared."""
        got = compare_holder(holder(), applicant(national_id="--"), KEY)
        assert got.national_id is UNKNOWN

    def test_document_number_only_confirms(self) -> None:
        """Without an idNumber, a document number equal to the ID number matches; another says nothing."""
        same = holder(national_id=None, document_number="11010119900307242X")
        serial = holder(national_id=None, document_number="E12345678")
        assert compare_holder(same, applicant(), KEY).national_id is MATCH
        assert compare_holder(serial, applicant(), KEY).national_id is UNKNOWN

    def test_another_key_is_not_compared(self) -> None:
        """Digests under another integration's key compare as not checked."""
        other = HolderKey("another-secret")
        assert fields(compare_holder(holder(), applicant(), other)) == (UNKNOWN,) * 3


class TestDigests:
    def test_no_value_readable(self) -> None:
        """Neither the data nor the repr holds a value Veriff sent."""
        read = holder(given_name="MING", family_name="SUN", document_number="E1234567")
        text = json.dumps(read.to_data()) + repr(read) + repr(KEY)
        for value in ("MING", "ming", "SUN", "sun", "242X", "1990", "E1234567"):
            assert value not in text
        assert read.key_id == KEY.key_id
        assert repr(KEY) == f"<multiverify.providers.HolderKey({KEY.key_id})>"

    def test_keyed(self) -> None:
        """The same value digests differently under another key."""
        other = HolderKey(b"another-secret")
        assert (
            holder().national_id
            != DocumentHolder.read(other, national_id="11010119900307242X").national_id
        )

    def test_round_trip(self) -> None:
        """to_data and from_data agree."""
        for read in (
            holder(),
            DocumentHolder.read(KEY),
            holder(given_name="芳", family_name="王"),
        ):
            assert DocumentHolder.from_data(read.to_data()) == read

    @pytest.mark.parametrize(
        "data",
        [
            {},
            {"key_id": ""},
            {"key_id": 7},
            {"key_id": "k", "words": "abc"},
            {"key_id": "k", "family": [1]},
            {"key_id": "k", "national_id": 42},
        ],
    )
    def test_malformed(self, data: dict[str, Any]) -> None:
        """Malformed digests are a ProviderResponseError."""
        with pytest.raises(ProviderResponseError):
            DocumentHolder.from_data(data)

"""Tests for masking personal data (a private module: it has no public path yet)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiverify._masking import mask_email, mask_id, mask_name, mask_phone

# Inputs never contain the mask character: an input made of "*" would mask to itself.
TEXT = st.characters(blacklist_characters="*", blacklist_categories=["Cs"])
DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=20)


class TestMaskPhone:
    def test_keeps_country_code_and_last_four(self) -> None:
        """An E.164 number keeps ``+``, two leading digits and the last four."""
        assert mask_phone("+8613800138000") == "+86*******8000"

    def test_number_without_plus(self) -> None:
        """Without ``+`` the first two and last four digits are kept."""
        assert mask_phone("13800138000") == "13*****8000"

    @pytest.mark.parametrize("short", ["", "+", "123456", "+123456", "+1"])
    def test_short_numbers_are_fully_masked(self, short: str) -> None:
        """Six digits or fewer reveal nothing: every character becomes ``*``."""
        assert mask_phone(short) == "*" * len(short)

    def test_seven_digits_mask_one(self) -> None:
        """The shortest partly shown number hides exactly one digit."""
        assert mask_phone("1234567") == "12*4567"

    @given(digits=DIGITS, plus=st.booleans())
    def test_length_is_kept(self, digits: str, plus: bool) -> None:
        """The masked number is as long as the number."""
        phone = ("+" if plus else "") + digits
        assert len(mask_phone(phone)) == len(phone)

    @given(digits=DIGITS.filter(lambda d: len(d) > 6), plus=st.booleans())
    def test_never_reveals_the_full_number(self, digits: str, plus: bool) -> None:
        """A number longer than the kept six digits never appears in its mask."""
        phone = ("+" if plus else "") + digits
        masked = mask_phone(phone)
        assert phone not in masked
        assert digits not in masked
        assert masked.count("*") == len(digits) - 6
        assert masked.endswith(digits[-4:])
        assert masked.startswith(phone[: 3 if plus else 2])


class TestMaskId:
    def test_keeps_last_four(self) -> None:
        """By default the last four characters are kept."""
        assert mask_id("110101199003074578") == "**************4578"

    def test_keep_is_configurable(self) -> None:
        """``keep`` sets how many trailing characters stay."""
        assert mask_id("ABCDEFGH", keep=2) == "******GH"

    def test_keep_zero_masks_everything(self) -> None:
        """With ``keep=0`` nothing is revealed."""
        assert mask_id("secret", keep=0) == "******"

    def test_negative_keep_masks_everything(self) -> None:
        """A negative ``keep`` reveals nothing rather than the start of the id."""
        assert mask_id("secret", keep=-2) == "******"

    @pytest.mark.parametrize("short", ["", "1", "1234"])
    def test_short_ids_are_fully_masked(self, short: str) -> None:
        """An id no longer than ``keep`` is all ``*``."""
        assert mask_id(short) == "*" * len(short)

    @given(value=st.text(TEXT, max_size=40), keep=st.integers(-2, 8))
    def test_length_and_tail(self, value: str, keep: int) -> None:
        """The mask is as long as the id and ends with at most ``keep`` characters of it."""
        masked = mask_id(value, keep=keep)
        assert len(masked) == len(value)
        shown = len(value) - masked.count("*")
        assert shown == (0 if len(value) <= keep else max(keep, 0))
        assert masked[len(masked) - shown :] == value[len(value) - shown :]

    @given(value=st.text(TEXT, min_size=1, max_size=40), keep=st.integers(-2, 8))
    def test_never_reveals_the_full_id(self, value: str, keep: int) -> None:
        """An id longer than the kept part never appears in its mask."""
        assert value not in mask_id(value, keep=keep)


class TestMaskName:
    def test_keeps_initials(self) -> None:
        """Each word keeps its first character."""
        assert mask_name("Zhang San") == "Z**** S**"

    def test_short_words_get_at_least_two_stars(self) -> None:
        """One- and two-letter words still get two stars, hiding their length."""
        assert mask_name("Al B") == "A** B**"

    def test_extra_whitespace_is_collapsed(self) -> None:
        """Runs of spaces, tabs and newlines between words become one space."""
        assert mask_name("  Zhang \t San\n") == "Z**** S**"

    def test_chinese_name(self) -> None:
        """A name without spaces is one word."""
        assert mask_name("张伟") == "张**"

    @pytest.mark.parametrize("blank", ["", "   ", "\n"])
    def test_blank_name_is_a_single_star(self, blank: str) -> None:
        """A blank name masks to ``*``."""
        assert mask_name(blank) == "*"

    @given(
        words=st.lists(
            st.text(TEXT.filter(lambda c: not c.isspace()), min_size=1, max_size=10),
            min_size=1,
            max_size=4,
        )
    )
    def test_shape(self, words: list[str]) -> None:
        """One masked word per word: its initial then ``max(len - 1, 2)`` stars."""
        masked = mask_name(" ".join(words)).split(" ")
        assert len(masked) == len(words)
        for word, out in zip(words, masked, strict=True):
            assert out == word[0] + "*" * max(len(word) - 1, 2)

    @given(
        name=st.text(TEXT, min_size=2, max_size=30).filter(
            lambda n: len(n.split()) > 1 or len(n.strip()) > 1
        )
    )
    def test_never_reveals_the_full_name(self, name: str) -> None:
        """A name longer than the kept initial never appears in its mask."""
        assert name not in mask_name(name)


class TestMaskEmail:
    def test_keeps_first_letter_and_domain(self) -> None:
        """The local part shrinks to its first letter and three stars."""
        assert mask_email("alice@example.com") == "a***@example.com"

    def test_local_length_is_hidden(self) -> None:
        """Short and long local parts mask alike."""
        assert mask_email("a@x.cn") == mask_email("abcdefgh@x.cn") == "a***@x.cn"

    def test_without_at_sign_masks_like_an_id(self) -> None:
        """Text with no ``@`` is masked as an id, keeping the last four."""
        assert mask_email("not-an-email") == "********mail"

    def test_empty_local_part(self) -> None:
        """An empty local part still gets the stars."""
        assert mask_email("@example.com") == "***@example.com"

    def test_splits_at_first_at_sign(self) -> None:
        """Everything after the first ``@`` counts as the domain."""
        assert mask_email("a@b@c.com") == "a***@b@c.com"

    @given(
        local=st.text(TEXT.filter(lambda c: c != "@"), min_size=1, max_size=20),
        domain=st.text(TEXT, min_size=1, max_size=20),
    )
    def test_never_reveals_the_full_address(self, local: str, domain: str) -> None:
        """The full address never appears; the domain always does."""
        email = f"{local}@{domain}"
        masked = mask_email(email)
        assert email not in masked
        assert masked == f"{local[0]}***@{domain}"

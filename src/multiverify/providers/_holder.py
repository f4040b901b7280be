"""Who holds the ID document a video vendor read, kept as keyed digests, and whether it is the applicant.

A vendor such as Veriff matches the face on video with the photo on the
document shown, but not the document with the loan applicant: a fraudster
applying in a victim's name can show their own document and their own face.
The vendor's decision names the document's holder (Veriff's
``verification.person``); [`DocumentHolder`][multiverify.providers.DocumentHolder]
keeps of it only HMAC-SHA256 digests of the normalised fields under a
[`HolderKey`][multiverify.providers.HolderKey] made from the integration's
secret, so the decision can travel as an event (and be recorded by a
workflow engine) without the holder's name, ID number or birth date in it.
[`compare_holder`][multiverify.providers.compare_holder] digests the
applicant's fields with the same key where the applicant is known (the
channel) and answers per field: match, no match, or not checked.

Normalisation, the same on both sides:

- names: Unicode NFKC, case folded, accents dropped, punctuation (hyphens,
  dots, the middle dot of transliterated names) read as spaces, apostrophes
  dropped (``O'Neil`` is ``oneil``).
  Names written in CJK scripts (Han, kana, Hangul) have no first/last split:
  they match when the whole name, spaces removed, equals the family name
  followed by the given name (or the given name followed by the family
  name). Other names compare by words: every word of the applicant's name
  must be on the document, the document's family name must be in the
  applicant's, and the applicant's name needs two words (unless the
  document's has one), so extra given or middle names on the document are
  allowed but a lone given name is not enough. Names in different scripts
  (Chinese characters on one side, Latin letters on the other) are not
  compared: not checked.
- ID numbers: NFKC, upper case, everything but letters and digits dropped
  (``110101-19900307 242x`` reads as ``11010119900307242X``).
- birth dates: ISO ``YYYY-MM-DD``; anything else is not checked.

A field the vendor did not send is not checked, never a mismatch.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

import attrs

from ..exceptions import ProviderResponseError
from ._bureau import IdentityMatch, MatchResult

if TYPE_CHECKING:
    from .._applicant import Applicant

__all__ = ["DocumentHolder", "HolderKey", "compare_holder"]

_PURPOSE = b"multiverify document holder v1"
_DIGEST_HEX = 32
_CJK = (
    "CJK UNIFIED IDEOGRAPH",
    "CJK COMPATIBILITY IDEOGRAPH",
    "HANGUL",
    "HIRAGANA",
    "KATAKANA",
)
_MIN_WORDS = 2
_APOSTROPHES = frozenset("'\u2019\u02bc`\u00b4")


class HolderKey:
    """The key of a document holder's digests, derived from a vendor integration's secret.

    The vendor's webhook handler and its provider derive the same key from
    the same shared secret, so digests made when a webhook is parsed compare
    with the applicant's in the channel. ``key_id`` names the key (it reveals
    nothing of it); digests under another key are not compared.

    Args:
        secret: the integration's shared secret.
    """

    __slots__ = ("_key", "key_id")

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        self._key = hmac.new(raw, _PURPOSE, hashlib.sha256).digest()
        self.key_id: str = hmac.new(self._key, b"key id", hashlib.sha256).hexdigest()[
            :16
        ]
        """A name for the key, kept with the digests."""

    def __repr__(self) -> str:
        return f"<multiverify.providers.HolderKey({self.key_id})>"

    def digest(self, field: str, value: str) -> str:
        """The keyed digest of one normalised ``value`` of ``field`` (hex)."""
        message = f"{field}\x1f{value}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:_DIGEST_HEX]


def _is_cjk(char: str) -> bool:
    return unicodedata.name(char, "").startswith(_CJK)


def name_words(text: str | None) -> tuple[str, ...]:
    """A name's words, normalised (see the module docstring)."""
    if not text:
        return ()
    folded = unicodedata.normalize(
        "NFKD", unicodedata.normalize("NFKC", text).casefold()
    )
    kept = "".join(
        char if char.isalnum() else " "
        for char in folded
        if not unicodedata.combining(char) and char not in _APOSTROPHES
    )
    return tuple(kept.split())


def name_script(words: Iterable[str]) -> str | None:
    """``cjk``, ``latin`` or ``other`` for a name's words, ``None`` for no words."""
    chars = "".join(words)
    if not chars:
        return None
    if any(_is_cjk(char) for char in chars):
        return "cjk"
    return "latin" if chars.isascii() else "other"


def id_number(text: str | None) -> str | None:
    """An ID or document number, normalised (see the module docstring)."""
    if not text:
        return None
    kept = "".join(
        c for c in unicodedata.normalize("NFKC", text).upper() if c.isalnum()
    )
    return kept or None


def birth_date(text: str | None) -> str | None:
    """A ``YYYY-MM-DD`` birth date, or ``None`` when it is not one."""
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        return None


def _digest(key: HolderKey, field: str, value: str | None) -> str | None:
    return None if value is None else key.digest(field, value)


def _digests(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def _optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ProviderResponseError(
        message=f"document holder field {name!r} is not a string",
        provider="",
        field=f"holder.{name}",
    )


def _digest_list(data: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProviderResponseError(
            message=f"document holder field {name!r} is not a list of digests",
            provider="",
            field=f"holder.{name}",
        )
    return tuple(value)


@attrs.frozen(kw_only=True)
class DocumentHolder:
    """The holder of the ID document a vendor read, as keyed digests: nothing readable.

    Every field but ``key_id`` and ``script`` is a digest (or a set of them)
    under the [`HolderKey`][multiverify.providers.HolderKey] named by
    ``key_id``; none appears in ``repr``. Build one with
    [`read`][multiverify.providers.DocumentHolder.read].

    Attributes:
        key_id: the key the digests are under.
        script: the name's script (``cjk``, ``latin``, ``other``), or
            ``None`` when the vendor read no name.
        words: the digests of the name's words (family and given names).
        family: the digests of the family name's words.
        whole: for a CJK name, the digests of family name then given name,
            and given name then family name, spaces removed.
        national_id: the digest of the personal ID number.
        document_number: the digest of the document's number.
        date_of_birth: the digest of the birth date.
    """

    key_id: str
    script: str | None = None
    words: tuple[str, ...] = attrs.field(default=(), converter=_digests, repr=False)
    family: tuple[str, ...] = attrs.field(default=(), converter=_digests, repr=False)
    whole: tuple[str, ...] = attrs.field(default=(), converter=_digests, repr=False)
    national_id: str | None = attrs.field(default=None, repr=False)
    document_number: str | None = attrs.field(default=None, repr=False)
    date_of_birth: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def read(
        cls,
        key: HolderKey,
        *,
        given_name: str | None = None,
        family_name: str | None = None,
        full_name: str | None = None,
        national_id: str | None = None,
        document_number: str | None = None,
        date_of_birth: str | None = None,
    ) -> DocumentHolder:
        """Digest the holder's fields as the vendor sent them (``None``: not sent).

        ``full_name`` is read only when neither ``given_name`` nor
        ``family_name`` is given.
        """
        given, family = name_words(given_name), name_words(family_name)
        words = (*given, *family) if given or family else name_words(full_name)
        script = name_script(words)
        whole: tuple[str, ...] = ()
        if script == "cjk":
            # No first/last split: the whole name, in either order.
            orders = (
                [(*family, *given), (*given, *family)] if given or family else [words]
            )
            words, family, whole = (), (), tuple("".join(order) for order in orders)
        return cls(
            key_id=key.key_id,
            script=script,
            words=[key.digest("name-word", word) for word in words],
            family=[key.digest("name-word", word) for word in family],
            whole=[key.digest("name", text) for text in whole],
            national_id=_digest(key, "id-number", id_number(national_id)),
            document_number=_digest(key, "id-number", id_number(document_number)),
            date_of_birth=_digest(key, "date-of-birth", birth_date(date_of_birth)),
        )

    def to_data(self) -> dict[str, Any]:
        """The digests as plain JSON values."""
        return {
            "key_id": self.key_id,
            "script": self.script,
            "words": list(self.words),
            "family": list(self.family),
            "whole": list(self.whole),
            "national_id": self.national_id,
            "document_number": self.document_number,
            "date_of_birth": self.date_of_birth,
        }

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> DocumentHolder:
        """Read back [`to_data`][multiverify.providers.DocumentHolder.to_data].

        Raises:
            ProviderResponseError: a field is missing or of the wrong type.
        """
        key_id = _optional_text(data, "key_id")
        if not key_id:
            raise ProviderResponseError(
                message="document holder has no key_id",
                provider="",
                field="holder.key_id",
            )
        return cls(
            key_id=key_id,
            script=_optional_text(data, "script"),
            words=_digest_list(data, "words"),
            family=_digest_list(data, "family"),
            whole=_digest_list(data, "whole"),
            national_id=_optional_text(data, "national_id"),
            document_number=_optional_text(data, "document_number"),
            date_of_birth=_optional_text(data, "date_of_birth"),
        )


def _name(holder: DocumentHolder, applicant: Applicant, key: HolderKey) -> MatchResult:
    words = name_words(applicant.name)
    script = name_script(words)
    if holder.script is None or script != holder.script:
        return MatchResult.NOT_CHECKED
    if script == "cjk":
        whole = key.digest("name", "".join(words))
        return MatchResult.MATCH if whole in holder.whole else MatchResult.NO_MATCH
    mine = {key.digest("name-word", word) for word in words}
    theirs = set(holder.words)
    enough = len(mine) >= min(_MIN_WORDS, len(theirs))
    matched = mine <= theirs and set(holder.family) <= mine and enough
    return MatchResult.MATCH if matched else MatchResult.NO_MATCH


def _national_id(
    holder: DocumentHolder, applicant: Applicant, key: HolderKey
) -> MatchResult:
    number = id_number(applicant.national_id)
    if number is None:
        return MatchResult.NOT_CHECKED
    mine = key.digest("id-number", number)
    if holder.national_id is not None:
        return MatchResult.MATCH if mine == holder.national_id else MatchResult.NO_MATCH
    # A document's number is the personal number on some cards (China's
    # resident identity card) and a serial on most: equal, it matches; else
    # it says nothing.
    if holder.document_number == mine:
        return MatchResult.MATCH
    return MatchResult.NOT_CHECKED


def compare_holder(
    holder: DocumentHolder, applicant: Applicant, key: HolderKey
) -> IdentityMatch:
    """How the document's holder matches the applicant: name, national ID and birth date.

    Digests under another key than ``key`` compare as not checked. ``phone``
    is never checked (documents carry none).
    """
    if holder.key_id != key.key_id:
        return IdentityMatch()
    born = key.digest("date-of-birth", applicant.date_of_birth.isoformat())
    return IdentityMatch(
        name=_name(holder, applicant, key),
        national_id=_national_id(holder, applicant, key),
        date_of_birth=MatchResult.NOT_CHECKED
        if holder.date_of_birth is None
        else (
            MatchResult.MATCH if born == holder.date_of_birth else MatchResult.NO_MATCH
        ),
    )

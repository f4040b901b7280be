"""Reading spoken answers: the CallAnalyzer protocol and a rule-based analyzer.

A speech answer arrives as the vendor's transcript (Twilio ``SpeechResult``
with ``Confidence``, Vonage ``speech.results``). An analyzer decides whether
it matches what the prompt expects and which risk signs it shows (coaching,
a third party, evasion, hesitation), with a confidence; below the channel's
threshold the question is asked again. Plug a transcript or voice model in
by implementing [`CallAnalyzer`][multiverify.channels.CallAnalyzer].
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import attrs

__all__ = ["Analysis", "CallAnalyzer", "RuleBasedAnalyzer", "SpeechAnswer"]


def _words(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class SpeechAnswer:
    """A spoken answer to analyze.

    Attributes:
        prompt_id: the prompt it answers.
        prompt_kind: ``identity``, ``intent``, ``detail``, ``risk``...
        transcript: what was recognised (personal: never logged).
        locale: the call's locale, such as ``zh-CN``.
        keywords: words an answer must name to match.
        expected: ``yes`` or ``no`` for a spoken yes/no question, else ``None``.
        recognizer_confidence: the vendor's confidence in the transcript.
    """

    prompt_id: str
    prompt_kind: str
    transcript: str = attrs.field(repr=False)
    locale: str
    keywords: tuple[str, ...] = attrs.field(default=(), converter=_words)
    expected: str | None = None
    recognizer_confidence: float | None = None


@attrs.frozen(kw_only=True)
class Analysis:
    """What an analyzer concluded.

    Attributes:
        matched: the answer matches (``None``: cannot tell; ask again).
        confidence: how sure, in ``[0, 1]``.
        signals: risk signs heard (``coached``, ``third_party_present``,
            ``evasive_answer``, ``hesitant``).
        detail: a short non-personal explanation.
    """

    matched: bool | None
    confidence: float
    signals: tuple[str, ...] = attrs.field(default=(), converter=_words)
    detail: str = ""


@runtime_checkable
class CallAnalyzer(Protocol):
    """**Protocol**: judges a spoken answer (transcript or voice analysis)."""

    async def analyze(self, answer: SpeechAnswer, /) -> Analysis:
        """Whether the answer matches, how sure, and the risk signs it shows."""
        ...


_CUES: dict[str, dict[str, tuple[str, ...]]] = {
    "coached": {
        "zh": (
            "有人让我",
            "他让我",
            "她让我",
            "叫我说",
            "教我",
            "让我这么说",
            "帮别人",
        ),
        "en": (
            "told me to say",
            "told me to",
            "someone asked me",
            "on behalf of",
            "for my friend",
        ),
    },
    "third_party_present": {
        "zh": ("旁边有人", "我朋友在", "老板让", "中介"),
        "en": ("my boss", "someone is here", "with me here", "the agent said"),
    },
    "evasive_answer": {
        "zh": ("为什么问", "不方便说", "不知道", "不清楚", "不想说"),
        "en": ("why do you", "don't know", "not sure", "can't say", "rather not"),
    },
}
_FILLERS = {
    "zh": ("嗯", "呃", "那个", "这个"),
    "en": ("um", "uh", "er", "hmm", "well"),
}
_NEGATIONS = {
    "zh": ("不", "没", "否"),
    "en": ("no", "not", "never", "don't", "didn't", "nope"),
}
_AFFIRMATIONS = {
    "zh": ("是", "对", "确认", "好的", "没错", "没问题", "可以", "当然"),
    "en": ("yes", "yeah", "correct", "right", "confirm", "sure"),
}
_TOKEN = re.compile(r"[a-z']+")


def _language(locale: str) -> str:
    return "zh" if locale.lower().startswith("zh") else "en"


def _contains(text: str, phrase: str, language: str) -> bool:
    if language == "zh":
        return phrase in text
    return re.search(rf"(?<![a-z']){re.escape(phrase)}(?![a-z'])", text) is not None


class RuleBasedAnalyzer:
    """A keyword analyzer for Chinese and English transcripts; no model, no network.

    Keywords match as substrings in Chinese and as whole words in English;
    a negation word turns a match around. Cue phrases raise ``coached``,
    ``third_party_present`` and ``evasive_answer``, and repeated fillers
    (``嗯``, ``um``) raise ``hesitant``. The confidence starts from the
    recogniser's and drops when the answer names no keyword; below
    ``min_confidence`` the answer is "cannot tell".

    Args:
        min_confidence: below this, ``matched`` is ``None``.
        filler_limit: fillers heard before the answer counts as hesitant.
    """

    def __init__(self, *, min_confidence: float = 0.5, filler_limit: int = 2) -> None:
        self._min = min_confidence
        self._fillers = filler_limit

    def __repr__(self) -> str:
        return f"<multiverify.channels.RuleBasedAnalyzer(min_confidence={self._min:g})>"

    async def analyze(self, answer: SpeechAnswer, /) -> Analysis:
        """Match keywords or yes/no, and listen for risk cues."""
        language = _language(answer.locale)
        text = " ".join(answer.transcript.lower().split())
        signals = [
            signal
            for signal, cues in _CUES.items()
            if any(_contains(text, cue, language) for cue in cues[language])
        ]
        fillers = sum(
            text.count(f) if language == "zh" else _TOKEN.findall(text).count(f)
            for f in _FILLERS[language]
        )
        if fillers >= self._fillers:
            signals.append("hesitant")
        if not text:
            return Analysis(matched=None, confidence=0.0, detail="no speech")
        # An affirmation spelled with a negation (没错 "not wrong", 没问题
        # "no problem") is no negation: it is taken out before one is looked for.
        plain = text
        for word in _AFFIRMATIONS[language]:
            if any(n in word for n in _NEGATIONS[language]):
                plain = plain.replace(word, " ")
        negated = any(_contains(plain, word, language) for word in _NEGATIONS[language])
        base = (
            answer.recognizer_confidence
            if answer.recognizer_confidence is not None
            else 0.8
        )
        if answer.expected is not None:
            affirmed = any(
                _contains(text, word, language) for word in _AFFIRMATIONS[language]
            )
            if negated == affirmed and not (negated and language == "zh"):
                return Analysis(
                    matched=None,
                    confidence=base * 0.4,
                    signals=signals,
                    detail="no clear yes or no",
                )
            said = "no" if negated else "yes"
            return Analysis(
                matched=said == answer.expected,
                confidence=base,
                signals=signals,
                detail=f"heard {said}",
            )
        hits = [word for word in answer.keywords if _contains(text, word, language)]
        confidence = base * (1.0 if hits else 0.6)
        if confidence < self._min:
            return Analysis(
                matched=None, confidence=confidence, signals=signals, detail="unclear"
            )
        matched = bool(hits) and not negated
        return Analysis(
            matched=matched,
            confidence=confidence,
            signals=signals,
            detail=f"{len(hits)} of {len(answer.keywords)} keywords",
        )

"""Tests for spoken answers: the rule-based analyzer's risk cues, and speech answers driving the phone-call channel."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import attrs
import httpx
import pytest
import respx

from multiverify import ResultStatus
from multiverify.channels import (
    Analysis,
    CallAnalyzer,
    Finished,
    PhoneCallChannel,
    PhoneCallState,
    ProviderEvent,
    RuleBasedAnalyzer,
    SpeechAnswer,
    StepContext,
    StepOutcome,
    Waiting,
)
from multiverify.providers import TwilioAccount, TwilioVoice
from multiverify.sandbox import get_persona
from multiverify.testing import FakeClock

HONEST = get_persona("honest").applicant
SID = "AC" + "3" * 32
CALLS = f"https://api.twilio.com/2010-04-01/Accounts/{SID}/Calls.json"


def _answer(
    transcript: str,
    *,
    locale: str = "zh-CN",
    keywords: tuple[str, ...] = (),
    expected: str | None = None,
    confidence: float | None = None,
) -> SpeechAnswer:
    return SpeechAnswer(
        prompt_id="p",
        prompt_kind="detail",
        transcript=transcript,
        locale=locale,
        keywords=keywords,
        expected=expected,
        recognizer_confidence=confidence,
    )


class TestRuleBasedAnalyzer:
    @pytest.mark.parametrize(
        ("transcript", "locale", "signal"),
        [
            ("是的，有人让我这么说的", "zh-CN", "coached"),
            ("yes, someone told me to say yes", "en", "coached"),
            ("我朋友在旁边，确认", "zh-CN", "third_party_present"),
            ("yes, my boss wants the money", "en", "third_party_present"),
            ("为什么问这个，不方便说", "zh-CN", "evasive_answer"),
            ("I'd rather not say, yes", "en", "evasive_answer"),
            ("嗯 嗯 呃 是的", "zh-CN", "hesitant"),
            ("um, uh, yes", "en", "hesitant"),
        ],
    )
    async def test_risk_cues(self, transcript: str, locale: str, signal: str) -> None:
        """Cue phrases and repeated fillers raise the risk signals, in Chinese and English."""
        analysis = await RuleBasedAnalyzer().analyze(
            _answer(transcript, locale=locale, expected="yes")
        )
        assert signal in analysis.signals

    async def test_plain_answer_has_no_cues(self) -> None:
        """A plain yes raises nothing."""
        analysis = await RuleBasedAnalyzer().analyze(_answer("是的", expected="yes"))
        assert analysis.matched is True
        assert analysis.signals == ()

    @pytest.mark.parametrize(
        ("transcript", "locale", "expected", "matched"),
        [
            ("对，是我申请的", "zh-CN", "yes", True),
            ("没有", "zh-CN", "no", True),
            ("不是我申请的", "zh-CN", "yes", False),
            ("没错", "zh-CN", "yes", True),  # "not wrong": an affirmation
            ("没错，是我本人", "zh-CN", "yes", True),
            ("没错，不是我申请的", "zh-CN", "yes", False),
            ("没问题", "zh-CN", "yes", True),  # "no problem": an affirmation
            ("没问题，是我申请的", "zh-CN", "yes", True),
            ("可以", "zh-CN", "yes", True),
            ("当然", "zh-CN", "yes", True),
            ("不可以", "zh-CN", "yes", False),
            ("当然不是", "zh-CN", "yes", False),
            ("yes, that's right", "en", "yes", True),
            ("no, I never applied", "en", "yes", False),
            ("nope", "en", "no", True),
        ],
    )
    async def test_yes_no(
        self, transcript: str, locale: str, expected: str, matched: bool
    ) -> None:
        """A spoken yes/no is heard, a negation wins in Chinese, and compared with the expected answer."""
        analysis = await RuleBasedAnalyzer().analyze(
            _answer(transcript, locale=locale, expected=expected, confidence=0.9)
        )
        assert analysis.matched is matched
        assert analysis.confidence == pytest.approx(0.9)

    async def test_neither_yes_nor_no(self) -> None:
        """An answer that is neither yes nor no cannot be told: asked again."""
        analysis = await RuleBasedAnalyzer().analyze(
            _answer("the weather is nice", locale="en", expected="yes")
        )
        assert analysis.matched is None
        assert analysis.detail == "no clear yes or no"

    async def test_keywords(self) -> None:
        """Keywords match whole English words; a negation turns the match around."""
        analyzer = RuleBasedAnalyzer()
        words = ("laptop", "design")
        hit = await analyzer.analyze(_answer("a laptop", locale="en", keywords=words))
        assert hit.matched is True
        assert hit.detail == "1 of 2 keywords"
        negated = await analyzer.analyze(
            _answer("not a laptop", locale="en", keywords=words)
        )
        assert negated.matched is False
        partial = await analyzer.analyze(
            _answer("laptops", locale="en", keywords=("laptop",), confidence=0.9)
        )
        assert partial.matched is False  # "laptops" is another word

    async def test_low_confidence_cannot_tell(self) -> None:
        """Below min_confidence (no keyword heard, a weak recogniser) the answer is asked again."""
        analysis = await RuleBasedAnalyzer(min_confidence=0.5).analyze(
            _answer("嗯", keywords=("装修",), confidence=0.6)
        )
        assert analysis.matched is None
        assert analysis.confidence == pytest.approx(0.36)

    async def test_silence(self) -> None:
        """No transcript is no answer at all."""
        analysis = await RuleBasedAnalyzer().analyze(_answer("  "))
        assert analysis == Analysis(matched=None, confidence=0.0, detail="no speech")

    def test_protocol(self) -> None:
        """The rule-based analyzer is a CallAnalyzer; its repr shows its threshold."""
        analyzer = RuleBasedAnalyzer(min_confidence=0.7)
        assert isinstance(analyzer, CallAnalyzer)
        assert (
            repr(analyzer)
            == "<multiverify.channels.RuleBasedAnalyzer(min_confidence=0.7)>"
        )


SPEECH_SCRIPT: dict[str, Any] = {
    "name": "spoken",
    "prompts": [
        {
            "id": "hello",
            "kind": "disclosure",
            "text": {"zh-CN": "您好。", "en": "Hello."},
        },
        {
            "id": "year",
            "kind": "identity",
            "text": {"zh-CN": "请输入出生年份。", "en": "Enter your year of birth."},
            "expect": {"kind": "digits", "length": 4, "source": "birth_year"},
        },
        {
            "id": "purpose",
            "kind": "detail",
            "text": {"zh-CN": "请说出借款用途。", "en": "Say what the loan is for."},
            "expect": {"kind": "speech", "source": "purpose"},
        },
        {
            "id": "pushed",
            "kind": "risk",
            "signal": "coached",
            "text": {
                "zh-CN": "是否有人让您办理这笔借款？",
                "en": "Did anyone ask you to take this loan?",
            },
            "expect": {"kind": "yes_no", "answer": "no"},
            "reprompts": 0,
        },
    ],
}


class _Call:
    """Drives the phone-call channel with a vendor's callbacks, as the webhooks would."""

    def __init__(self, analyzer: CallAnalyzer | None = None) -> None:
        self.router = respx.Router()
        self.router.post(CALLS).respond(201, json={"sid": "CA1", "status": "queued"})
        client = httpx.AsyncClient(
            transport=httpx.MockTransport(self.router.async_handler)
        )
        self.channel = PhoneCallChannel(
            [
                TwilioVoice(
                    account=TwilioAccount(
                        account_sid=SID, auth_token="t", client=client
                    ),
                    from_number="+8610555010",
                    callback_url="https://app.example/voice",
                )
            ],
            analyzer=analyzer,
        )
        self.clock = FakeClock(datetime(2026, 1, 5, 1, 0, tzinfo=UTC))
        self.context = StepContext(
            session_id="s",
            step_id="call",
            attempt=1,
            provider=None,
            idempotency_key="s:call:1",
            applicant=HONEST,
            options={"script": SPEECH_SCRIPT, "language": "en"},
            clock=self.clock,
        )
        self.state: PhoneCallState | None = None

    async def start(self) -> None:
        outcome = await self.channel.start(self.context)
        assert isinstance(outcome, Waiting)
        self.state = outcome.state
        await self.send({"event": "answer"})

    async def send(self, data: dict[str, Any]) -> StepOutcome:
        assert self.state is not None
        outcome = await self.channel.handle(
            self.context,
            self.state,
            ProviderEvent(
                session_id="s",
                step_id="call",
                kind=f"call.{data['event']}",
                data={"call": 1, **data},
                dedupe_key=str(data),
            ),
        )
        self.state = outcome.state
        return outcome

    async def say(
        self, *, digits: str = "", speech: str = "", after: float = 1.0
    ) -> StepOutcome:
        assert self.state is not None
        await self.clock.advance(after)
        return await self.send(
            {
                "event": "gather",
                "turn": self.state.turn,
                "digits": digits,
                "speech": speech,
                "confidence": 0.92 if speech else None,
            }
        )


class TestSpokenAnswers:
    async def test_honest_speech(self) -> None:
        """The purpose named aloud and a spoken no pass; the keywords come from the application."""
        call = _Call()
        await call.start()
        assert call.state is not None
        assert call.state.instruction is not None
        assert call.state.instruction.say == ("Hello.", "Enter your year of birth.")
        await call.say(digits="1990")
        assert call.state.instruction.gather is not None
        assert "laptop" in call.state.instruction.gather.hints
        await call.say(speech="it is a laptop for my design work")
        outcome = await call.say(speech="no, nobody")
        assert isinstance(outcome, Finished)
        assert outcome.result.status is ResultStatus.PASSED
        assert {"identity_confirmed", "details_completed"} <= set(
            outcome.result.signal_names
        )
        confidences = [a.confidence for a in outcome.state.answers]
        assert confidences[2:] == [pytest.approx(0.92), pytest.approx(0.92)]

    async def test_purpose_typed_with_punctuation(self) -> None:
        """A purpose typed with punctuation ("Laptop, for design work.") still matches the words said."""
        call = _Call()
        loan = attrs.evolve(HONEST.loan, purpose="Laptop, for design work.")
        call.context = attrs.evolve(
            call.context, applicant=attrs.evolve(HONEST, loan=loan)
        )
        await call.start()
        await call.say(digits="1990")
        hints = call.state.instruction.gather.hints  # type: ignore[union-attr]
        assert {"laptop", "design"} <= set(hints)
        assert not any(hint.endswith((",", ".")) for hint in hints)
        await call.say(speech="a laptop")
        purpose = call.state.answers[-1]  # type: ignore[union-attr]
        assert (purpose.prompt_id, purpose.matched) == ("purpose", True)

    async def test_risk_heard_in_speech(self) -> None:
        """Fillers, a slow answer and a third party in the transcript become signals; the call is inconclusive."""
        call = _Call()
        await call.start()
        await call.say(digits="1990", after=12.0)
        await call.say(speech="um, uh, a laptop")
        outcome = await call.say(speech="no, but my boss is with me here")
        assert isinstance(outcome, Finished)
        result = outcome.result
        assert result.status is ResultStatus.INCONCLUSIVE
        assert {"hesitant", "third_party_present"} <= set(result.signal_names)
        answers = {a.prompt_id: a for a in outcome.state.answers}
        assert answers["year"].hesitant
        assert answers["year"].response_time == pytest.approx(12.0)
        assert "hesitant" in answers["purpose"].signals

    async def test_coached_by_keypad_answer(self) -> None:
        """Answering yes to the risk question raises the prompt's signal, coached."""
        call = _Call()
        await call.start()
        await call.say(digits="1990")
        await call.say(speech="a laptop")
        outcome = await call.say(digits="1")
        assert isinstance(outcome, Finished)
        assert outcome.result.status is ResultStatus.INCONCLUSIVE
        assert "coached" in outcome.result.signal_names

    async def test_unclear_speech_is_asked_again_then_evasive(self) -> None:
        """Silence is re-prompted once; silence again counts as evasive and a detail mismatch."""
        call = _Call()
        await call.start()
        await call.say(digits="1990")
        first = call.state.turn if call.state else 0
        await call.say(speech="")
        assert call.state is not None
        assert call.state.turn == first + 1
        assert call.state.instruction is not None
        assert call.state.instruction.say[0] == "Sorry, I did not get that."
        await call.say(speech="")
        outcome = await call.say(digits="2")
        assert isinstance(outcome, Finished)
        assert {"evasive_answer", "detail_mismatch"} <= set(outcome.result.signal_names)

    async def test_a_custom_analyzer(self) -> None:
        """An injected CallAnalyzer judges the spoken answers."""

        class Doubtful:
            async def analyze(self, answer: SpeechAnswer, /) -> Analysis:
                return Analysis(matched=True, confidence=0.55, signals=("coached",))

        call = _Call(analyzer=Doubtful())
        await call.start()
        await call.say(digits="1990")
        await call.say(speech="whatever")
        outcome = await call.say(speech="whatever")
        assert isinstance(outcome, Finished)
        assert "coached" in outcome.result.signal_names
        assert [a.confidence for a in outcome.state.answers][2:] == [0.55, 0.55]


class TestKeypad:
    async def test_garbage_is_asked_again_then_counts(self) -> None:
        """Malformed keys get one re-prompt, then count against the prompt: invalid_input, identity fails."""
        call = _Call()
        await call.start()
        await call.say(digits="19")
        assert call.state is not None
        assert call.state.instruction is not None
        assert call.state.instruction.say[0] == "Sorry, I did not get that."
        outcome = await call.say(digits="abcd")
        assert isinstance(outcome, Finished)
        assert outcome.result.status is ResultStatus.FAILED
        assert {"invalid_input", "identity_mismatch"} <= set(
            outcome.result.signal_names
        )
        (answer,) = [a for a in outcome.state.answers if a.prompt_id == "year"]
        assert answer.invalid == 2
        assert outcome.state.instruction is not None
        assert outcome.state.instruction.hangup

    async def test_a_late_answer_changes_nothing(self) -> None:
        """An answer for an earlier turn (a repeated delivery) is ignored."""
        call = _Call()
        await call.start()
        assert call.state is not None
        turn = call.state.turn
        await call.say(digits="1990")
        before = call.state
        outcome = await call.send(
            {"event": "gather", "turn": turn, "digits": "1990", "speech": ""}
        )
        assert outcome.state == before


class TestCancel:
    async def test_a_live_call_hears_the_ending(self) -> None:
        """Cancelling the step mid-call says the script's ending before the call ends."""
        call = _Call()
        call.router.get(CALLS.replace(".json", "/CA1.json")).respond(
            200, json={"sid": "CA1", "status": "in-progress"}
        )
        update = call.router.post(CALLS.replace(".json", "/CA1.json")).respond(
            200, json={"sid": "CA1", "status": "in-progress"}
        )
        await call.start()
        await call.channel.cancel(call.context, call.state)
        form = parse_qs(update.calls.last.request.content.decode())
        assert "a colleague will contact you" in form["Twiml"][0]
        assert form["Twiml"][0].endswith("<Hangup /></Response>")

    async def test_a_ringing_call_is_canceled(self) -> None:
        """Cancelling before anyone answered just cancels the call."""
        call = _Call()
        call.router.get(CALLS.replace(".json", "/CA1.json")).respond(
            200, json={"sid": "CA1", "status": "ringing"}
        )
        update = call.router.post(CALLS.replace(".json", "/CA1.json")).respond(
            200, json={"sid": "CA1", "status": "canceled"}
        )
        outcome = await call.channel.start(call.context)
        await call.channel.cancel(call.context, outcome.state)
        assert parse_qs(update.calls.last.request.content.decode()) == {
            "Status": ["canceled"]
        }

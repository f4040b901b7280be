"""Applicant personas: a sample applicant and how they behave on each channel."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal

import attrs

from .._applicant import Address, Applicant, Consent, Contact, LoanApplication
from .._results import Outcome
from ..exceptions import ConfigurationError
from ..testing import Scripted

__all__ = ["PERSONAS", "Persona", "get_persona"]


@attrs.frozen(kw_only=True)
class Persona:
    """A sample applicant and their scripted behaviour, for the demo and examples.

    Delays are nominal seconds: [`simulated_channels`][multiverify.sandbox.simulated_channels]
    and [`play`][multiverify.sandbox.play] scale them with ``speed``.

    Attributes:
        name: the persona's name, such as ``honest``.
        summary: one line on what the persona does.
        applicant: who applies, with the loan in CNY.
        expected: the outcome the default demo policy reaches for them.
        bureau: what the credit-bureau lookup finds.
        call: how the confirmation call ends.
        video: how the video signing ends, once the applicant completes it.
        sms_delivery: how long the code takes to arrive.
        types_code: whether the applicant types the code they received.
        typing_delay: how long the applicant takes to type the code.
        completes_video: whether the applicant completes a video signing.
        video_delay: how long the video session takes.
        video_persona: how the applicant behaves at the sandbox video vendor,
            one of [`video_personas`][multiverify.sandbox.video_personas].
        voice: how they behave on the confirmation call: the name of a
            voice persona of the sandbox voice vendor.
        bureau_persona: how their file reads at the sandbox bureau, one of
            [`BUREAU_PERSONAS`][multiverify.sandbox.BUREAU_PERSONAS].
    """

    name: str
    summary: str
    applicant: Applicant = attrs.field(repr=False)
    expected: Outcome
    bureau: Scripted = attrs.field(repr=False)
    call: Scripted = attrs.field(repr=False)
    video: Scripted = attrs.field(repr=False)
    sms_delivery: float = 0.2
    types_code: bool = True
    typing_delay: float = 0.6
    completes_video: bool = True
    video_delay: float = 0.6
    video_persona: str = "passes"
    voice: str = "honest"
    bureau_persona: str = "clean"


def _consent(applicant_id: str) -> tuple[Consent, ...]:
    """The consent to a credit pull the applicant gave in the app (贷前审批: loan approval)."""
    return (Consent(reference=f"consent-{applicant_id}", purposes=("loan_approval",)),)


def _loan(amount: str, term_months: int, purpose: str) -> LoanApplication:
    return LoanApplication(
        amount=Decimal(amount),
        currency="CNY",
        term_months=term_months,
        purpose=purpose,
        annual_rate=Decimal("0.108"),
    )


_VIDEO_PASSES = Scripted.passes(
    signals=["liveness_passed", "face_match", "statement_confirmed"], score=0.88
)

PERSONAS: Mapping[str, Persona] = {
    persona.name: persona
    for persona in (
        Persona(
            name="honest",
            summary="answers everything, confirms the loan: approved",
            applicant=Applicant(
                applicant_id="demo-honest-001",
                consents=_consent("demo-honest-001"),
                name="Wang Fang",
                national_id="110101199003072420",
                phone="+8613800138000",
                date_of_birth=date(1990, 3, 7),
                timezone="Asia/Shanghai",
                locale="zh-CN",
                loan=_loan("8000", 12, "laptop for freelance design work"),
                address=Address(
                    lines=("12 Dongsi North Street",),
                    city="Beijing",
                    region="Beijing",
                    postal_code="100007",
                    country="CN",
                ),
                contacts=(
                    Contact(
                        name="Wang Lei", relation="sibling", phone="+8613912345678"
                    ),
                ),
            ),
            expected=Outcome.APPROVED,
            bureau=Scripted.passes(signals=["identity_match"], score=0.92, delay=0.5),
            call=Scripted.passes(
                signals=["identity_confirmed", "intent_confirmed", "details_completed"],
                score=0.9,
                delay=0.6,
            ),
            video=_VIDEO_PASSES,
        ),
        Persona(
            name="no-answer",
            summary="never picks up the call, completes the video signing: approved",
            applicant=Applicant(
                applicant_id="demo-no-answer-002",
                consents=_consent("demo-no-answer-002"),
                name="Li Qiang",
                national_id="31010419851121153X",
                phone="+8615012348888",
                date_of_birth=date(1985, 11, 21),
                timezone="Asia/Shanghai",
                locale="zh-CN",
                loan=_loan("15000", 24, "home renovation"),
            ),
            expected=Outcome.APPROVED,
            bureau=Scripted.passes(signals=["identity_match"], score=0.85, delay=0.4),
            call=Scripted.fails(signals=["no_answer"], delay=0.6),
            video=_VIDEO_PASSES,
            voice="unreachable",
        ),
        Persona(
            name="fraudster",
            summary="applies with a flagged identity: rejected at once",
            applicant=Applicant(
                applicant_id="demo-fraudster-003",
                consents=_consent("demo-fraudster-003"),
                name="Zhao Lei",
                national_id="440305199606306313",
                phone="+8618623456789",
                date_of_birth=date(1996, 6, 30),
                timezone="Asia/Shanghai",
                locale="zh-CN",
                loan=_loan("50000", 36, "business expansion"),
            ),
            expected=Outcome.REJECTED,
            bureau=Scripted.fails(
                signals=["fraud_alert", "many_recent_inquiries"], score=0.05, delay=0.4
            ),
            call=Scripted.fails(signals=["wrong_person"], delay=0.6),
            video=Scripted.fails(signals=["face_mismatch"], score=0.1),
            typing_delay=1.0,
            video_persona="face-mismatch",
            voice="fraudster",
            bureau_persona="fraud-alert",
        ),
        Persona(
            name="hesitant",
            summary="confirms the loan but hesitates and evades: review",
            applicant=Applicant(
                applicant_id="demo-hesitant-004",
                consents=_consent("demo-hesitant-004"),
                name="Chen Jing",
                national_id="510107197901154229",
                phone="+8613700001111",
                date_of_birth=date(1979, 1, 15),
                timezone="Asia/Shanghai",
                locale="zh-CN",
                loan=_loan("20000", 12, "medical expenses"),
            ),
            expected=Outcome.REVIEW,
            bureau=Scripted.passes(signals=["identity_match"], score=0.8, delay=0.4),
            call=Scripted.passes(
                signals=[
                    "identity_confirmed",
                    "intent_confirmed",
                    "hesitant",
                    "evasive_answer",
                ],
                score=0.55,
                delay=0.6,
            ),
            video=_VIDEO_PASSES,
            voice="hesitant",
            bureau_persona="many-inquiries",
        ),
    )
}
"""The shipped personas, by name: ``honest``, ``no-answer``, ``fraudster``, ``hesitant``."""


def get_persona(name: str) -> Persona:
    """A shipped persona by name.

    Raises:
        ConfigurationError: no persona has this name.
    """
    try:
        return PERSONAS[name]
    except KeyError:
        known = ", ".join(PERSONAS)
        raise ConfigurationError(
            message=f"no persona named {name!r} (known: {known})"
        ) from None

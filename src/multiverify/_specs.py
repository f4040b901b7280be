"""What the core knows about a channel without importing it: name, signals, facts."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

__all__ = ["BUILTIN_CHANNELS", "ChannelSpec"]


def _names(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values)


@attrs.frozen(kw_only=True)
class ChannelSpec:
    """A channel's description, used to validate policies that name it.

    Attributes:
        name: the name policies use, such as ``sms_code``.
        signals: every signal the channel can emit; a rule testing another
            name can never fire. Empty means "not declared": nothing is checked.
        automatic: whether the channel finishes without the applicant (a
            bureau lookup) or waits for input or callbacks (an SMS code).
        description: one line for ``policy explain``.
    """

    name: str
    signals: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    automatic: bool = False
    description: str = ""


BUILTIN_CHANNELS: dict[str, ChannelSpec] = {
    spec.name: spec
    for spec in (
        ChannelSpec(
            name="credit_bureau",
            automatic=True,
            description="credit-bureau lookup: identity match, fraud alerts, inquiries",
            signals={
                "identity_match",
                "identity_mismatch",
                "fraud_alert",
                "security_freeze",
                "thin_file",
                "no_hit",
                "many_recent_inquiries",
                "delinquent",
                "blacklist_hit",
            },
        ),
        ChannelSpec(
            name="sms_code",
            description="one-time code sent by SMS and typed into the app",
            signals={
                "code_verified",
                "wrong_code",
                "attempts_exhausted",
                "code_expired",
                "undelivered",
                "invalid_number",
            },
        ),
        ChannelSpec(
            name="phone_call",
            description="confirmation call: identity, loan intent, details, risk signs",
            signals={
                "identity_confirmed",
                "identity_mismatch",
                "intent_confirmed",
                "intent_declined",
                "details_completed",
                "evasive_answer",
                "hesitant",
                "third_party_present",
                "coached",
                "inconsistent",
                "answering_machine",
                "no_answer",
                "busy",
                "refused",
                "wrong_person",
                "call_back_later",
            },
        ),
        ChannelSpec(
            name="video_sign",
            description="video signing: liveness, face match, spoken confirmation",
            signals={
                "liveness_passed",
                "liveness_failed",
                "face_match",
                "face_mismatch",
                "statement_confirmed",
                "resubmission_requested",
                "abandoned",
                "document_invalid",
            },
        ),
    )
}

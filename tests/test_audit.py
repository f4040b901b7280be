"""Tests for the audit trail: hash chains, tamper detection, JSONL, masking, replay."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any

import attrs
import pytest

from multiverify import (
    Applicant,
    AuditEvent,
    AuditTrail,
    Challenge,
    ChannelResult,
    Contact,
    Evidence,
    LoanApplication,
    Outcome,
    Policy,
    PolicyRef,
    ResultStatus,
    Rule,
    Session,
    Signal,
    Step,
    StepState,
)
from multiverify._audit import (
    GENESIS,
    _effect_summary,
    _masked_input,
    canonical_json,
    masked_applicant,
)
from multiverify._serde import unstructure
from multiverify._session import (
    Cancel,
    CancelStep,
    CancelTimer,
    Input,
    NotifyStep,
    ScheduleTimer,
    Start,
    StartStep,
    StepErrored,
    StepFinished,
    StepStarted,
    StepUpdated,
    TimerFired,
    new_session,
    transition,
)
from multiverify.exceptions import AuditIntegrityError, ConfigurationError

T0 = datetime(2025, 3, 7, 9, 0, tzinfo=UTC)
NAME = "Zhang Wei"
NATIONAL_ID = "110101199003074578"
PHONE = "+8613800138000"
CONTACT_NAME = "Li Na"
CONTACT_PHONE = "+8613900139000"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_policy(version: str = "1", deadline: float | None = 3600) -> Policy:
    return Policy(
        name="consumer-loan",
        version=version,
        deadline=deadline,
        steps=[
            Step(
                id="bureau", channel="credit_bureau", providers=["experian", "equifax"]
            ),
            Step(id="sms", channel="sms_code", timeout=300),
        ],
        rules=[
            Rule(
                outcome="rejected",
                when="'fraud_alert' in steps.bureau.signals",
                reason="fraud",
            ),
            Rule(
                outcome="approved",
                when="steps.bureau.status == 'passed' && steps.sms.status == 'passed'",
                reason="confirmed",
            ),
        ],
    )


POLICY = make_policy()


def make_applicant() -> Applicant:
    return Applicant(
        applicant_id="app-1",
        name=NAME,
        national_id=NATIONAL_ID,
        phone=PHONE,
        date_of_birth=date(1990, 3, 7),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="50000", currency="CNY", term_months=12, purpose="renovation"
        ),
        contacts=[Contact(name=CONTACT_NAME, relation="spouse", phone=CONTACT_PHONE)],
    )


INPUTS: list[Input] = [
    Start(at=T0),
    StepErrored(step_id="bureau", attempt=1, at=at(2), error="HTTP 503"),
    StepStarted(
        step_id="sms",
        attempt=1,
        at=at(3),
        challenge=Challenge(step_id="sms", kind="code", destination="+86*******8000"),
        channel_state={"destination": PHONE, "hmac": "c0ffee", "holder": NAME},
        timers=[("resend", at(63))],
    ),
    TimerFired(timer_id="step:sms:1:channel:resend", at=at(63)),
    StepUpdated(
        step_id="sms",
        attempt=1,
        at=at(70),
        channel_state={"destination": PHONE, "national_id": NATIONAL_ID},
    ),
    StepFinished(
        step_id="bureau",
        attempt=2,
        at=at(80),
        result=ChannelResult(
            status=ResultStatus.PASSED,
            signals=[Signal(name="identity_match")],
            score=0.8,
            facts={"band": "A"},
        ),
        channel_state={"report": NAME},
    ),
    StepFinished(
        step_id="sms",
        attempt=1,
        at=at(90),
        result=ChannelResult(status=ResultStatus.PASSED, score=1.0),
        channel_state={"destination": PHONE},
    ),
]


def record(
    inputs: Sequence[Input] = INPUTS,
    policy: Policy = POLICY,
    *,
    session_id: str = "sess-1",
) -> tuple[Session, list[AuditEvent]]:
    """Run a session through the core, recording its trail as the runtime does."""
    session = new_session(policy, make_applicant(), session_id=session_id, at=T0)
    session, event = AuditTrail.created(session, at=T0)
    events = [event]
    for item in inputs:
        session = transition(policy, session, item).session
        session, event = AuditTrail.input(session, item, at=item.at)
        events.append(event)
    return session, events


class TestAuditEvent:
    def test_json_line_is_compact_and_sorted(self) -> None:
        """``to_json`` writes one compact line with sorted keys."""
        _, events = record(INPUTS[:1])
        line = events[0].to_json()
        assert "\n" not in line
        assert ", " not in line
        assert list(json.loads(line)) == sorted(json.loads(line))

    def test_from_json_round_trip(self) -> None:
        """``from_json`` reads back what ``to_json`` wrote."""
        _, events = record()
        assert [AuditEvent.from_json(e.to_json()) for e in events] == events


class TestAuditTrailChain:
    def test_created_starts_the_chain(self) -> None:
        """The first event links to the genesis hash and moves the session's head."""
        session = new_session(POLICY, make_applicant(), session_id="sess-1", at=T0)
        session, event = AuditTrail.created(session, at=T0)
        assert (event.index, event.kind, event.prev) == (0, "session.created", GENESIS)
        assert len(event.hash) == 64
        assert (session.audit_head, session.audit_count) == (event.hash, 1)
        assert event.data["policy"] == {
            "name": "consumer-loan",
            "version": "1",
            "hash": POLICY.hash,
        }
        assert event.data["steps"] == ["bureau", "sms"]
        assert event.data["deadline_at"] == at(3600).isoformat()
        assert event.data["created_at"] == T0.isoformat()
        assert event.data["facts"]["application"]["amount"] == 50000.0

    def test_inputs_are_chained_in_order(self) -> None:
        """Each input event links to the one before it."""
        session, events = record()
        assert [e.index for e in events] == list(range(len(INPUTS) + 1))
        assert all(b.prev == a.hash for a, b in itertools.pairwise(events))
        assert (session.audit_head, session.audit_count) == (
            events[-1].hash,
            len(events),
        )
        assert events[1].data == {"input": {"type": "Start", "at": T0.isoformat()}}

    def test_append_makes_data_json_compatible(self) -> None:
        """Any event kind can be appended; values JSON lacks become strings."""
        session, _ = record(INPUTS[:1])
        session, event = AuditTrail.append(
            session, "provider.call", {"when": at(5), "tries": 2}, at=at(5)
        )
        assert event.data == {"when": at(5).isoformat(sep=" "), "tries": 2}
        assert (event.index, session.audit_count) == (2, 3)

    def test_same_content_same_hash(self) -> None:
        """The chain is deterministic: the same inputs give the same hashes."""
        assert record()[1] == record()[1]


class TestAuditTrailVerify:
    def test_intact_trail(self) -> None:
        """An untouched trail verifies and the count of events is returned."""
        _, events = record()
        assert AuditTrail.verify(events) == len(events)

    def test_empty_trail(self) -> None:
        """Nothing to check is not an error."""
        assert AuditTrail.verify([]) == 0

    def test_interleaved_sessions(self) -> None:
        """Chains of different sessions may be interleaved."""
        _, first = record()
        _, second = record(session_id="sess-2")
        mixed = [e for pair in zip(first, second, strict=True) for e in pair]
        assert AuditTrail.verify(mixed) == 2 * len(first)
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.verify([*mixed[:5], *mixed[6:]])
        assert info.value.index == 6

    def test_changed_data(self) -> None:
        """Changing an event's data breaks its hash; verify names that event."""
        _, events = record()
        tampered = list(events)
        data = events[6].data
        data["input"]["result"]["status"] = "failed"
        tampered[6] = attrs.evolve(events[6], body=canonical_json(data))
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.verify(tampered)
        assert info.value.index == 6
        assert "does not match its hash" in str(info.value)
        assert "(session sess-1, #6, input)" in str(info.value)

    @pytest.mark.parametrize(
        "change", [{"kind": "verdict"}, {"at": at(-1)}, {"session_id": "sess-9"}]
    )
    def test_changed_fields(self, change: dict[str, Any]) -> None:
        """Changing the kind, time or session of an event is detected too."""
        _, events = record()
        tampered = [*events[:3], attrs.evolve(events[3], **change), *events[4:]]
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.verify(tampered)
        assert info.value.index == 3

    def test_dropped_event(self) -> None:
        """Dropping an event is reported at the position of the gap."""
        _, events = record()
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.verify([*events[:4], *events[5:]])
        assert info.value.index == 4
        assert "expected index 4, found 5" in str(info.value)

    def test_reordered_events(self) -> None:
        """Swapping two events is reported at the first out of place."""
        _, events = record()
        swapped = [*events[:2], events[3], events[2], *events[4:]]
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.verify(swapped)
        assert info.value.index == 2

    def test_bad_prev(self) -> None:
        """An event whose link does not name the previous hash is reported."""
        _, events = record()
        forged = attrs.evolve(events[2], prev="f" * 64)
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.verify([*events[:2], forged, *events[3:]])
        assert info.value.index == 2
        assert "link to the previous event is broken" in str(info.value)

    def test_forged_hash_is_caught_by_the_next_link(self) -> None:
        """Rehashing a changed event still breaks the following event's link."""
        _, events = record()
        event = events[1]
        session = Session(
            session_id="sess-1",
            applicant=None,
            policy=POLICY.ref,
            created_at=T0,
            audit_head=events[0].hash,
            audit_count=1,
        )
        _, forged = AuditTrail.append(session, "input", {"input": {}}, at=event.at)
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.verify([events[0], forged, *events[2:]])
        assert info.value.index == 2


class TestAuditTrailHeads:
    def test_a_trail_reaching_its_head_verifies(self) -> None:
        """Each session's chain ends at the head its store keeps."""
        session, events = record()
        assert AuditTrail.verify(events, heads={"sess-1": session.audit_head}) == len(
            events
        )

    def test_events_cut_off_the_end_are_caught_by_the_head(self) -> None:
        """Without its last events a chain is still whole; the head shows the cut."""
        session, events = record()
        assert AuditTrail.verify(events[:-1]) == len(events) - 1
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.verify(events[:-1], heads={"sess-1": session.audit_head})
        assert info.value.index == len(events) - 1
        assert "dropped from its end" in info.value.message

    def test_sessions_without_a_head_are_checked_by_their_chain(self) -> None:
        """A head given for another session leaves this one to its chain."""
        _, events = record()
        assert AuditTrail.verify(events, heads={"other": "0" * 64}) == len(events)


class TestAuditTrailJsonl:
    def test_round_trip(self) -> None:
        """Exported JSON lines read back to the same events, which still verify."""
        _, events = record()
        out = io.StringIO()
        assert AuditTrail.export_jsonl(events, out) == len(events)
        text = out.getvalue()
        assert text.count("\n") == len(events)
        read = AuditTrail.read_jsonl(text.splitlines())
        assert read == events
        assert AuditTrail.verify(read) == len(events)

    def test_blank_lines_are_skipped(self) -> None:
        """Blank and whitespace-only lines are not events."""
        _, events = record(INPUTS[:2])
        lines = ["", events[0].to_json(), "   ", events[1].to_json() + "\n", "\n"]
        assert AuditTrail.read_jsonl(lines) == events[:2]

    @pytest.mark.parametrize(
        "garbage",
        [
            "not json",
            "[1, 2]",
            '"text"',
            "null",
            '{"session_id": "s"}',
            (
                '{"session_id": "s", "index": "x", "at": "2025-01-01T00:00:00",'
                ' "kind": "k", "data": {}, "prev": "", "hash": ""}'
            ),
            (
                '{"session_id": "s", "index": 0, "at": "yesterday",'
                ' "kind": "k", "data": {}, "prev": "", "hash": ""}'
            ),
            (
                '{"session_id": "s", "index": 0, "at": "2025-01-01T00:00:00",'
                ' "kind": "k", "data": 5, "prev": "", "hash": ""}'
            ),
        ],
    )
    def test_garbage_line(self, garbage: str) -> None:
        """A line that is not an audit event is AuditIntegrityError naming the line."""
        _, events = record(INPUTS[:1])
        lines = [events[0].to_json(), "", garbage]
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.read_jsonl(lines)
        assert info.value.index == 1
        assert str(info.value).startswith("line 3 is not an audit event")


class TestMasking:
    def test_no_personal_data_in_any_event(self) -> None:
        """Names, the national id and full phone numbers never reach the trail."""
        _, events = record()
        out = io.StringIO()
        AuditTrail.export_jsonl(events, out)
        text = out.getvalue()
        for secret in (
            NAME,
            "Zhang",
            NATIONAL_ID,
            PHONE,
            PHONE[1:],
            PHONE[3:],
            CONTACT_NAME,
            CONTACT_PHONE[3:],
            "c0ffee",
        ):
            assert secret not in text

    def test_channel_state_is_emptied(self) -> None:
        """Inputs keep their shape, but the channel's own state is left out."""
        _, events = record()
        states = [
            e.data["input"]["channel_state"]
            for e in events
            if "channel_state" in e.data.get("input", {})
        ]
        assert len(states) == 4
        assert all(state == {} for state in states)

    def test_masked_applicant(self) -> None:
        """The created event keeps a masked applicant."""
        _, events = record(INPUTS[:1])
        assert events[0].data["applicant"] == {
            "applicant_id": "app-1",
            "name": "Z**** W**",
            "national_id": "**************4578",
            "phone": "+86*******8000",
            "timezone": "Asia/Shanghai",
            "locale": "en",
            "contacts": 1,
        }

    def test_purged_applicant(self) -> None:
        """A session without an applicant records none."""
        assert masked_applicant(None) is None
        session = Session(
            session_id="s", applicant=None, policy=POLICY.ref, created_at=T0
        )
        _, event = AuditTrail.created(session, at=T0)
        assert event.data["applicant"] is None
        assert event.data["deadline_at"] is None


class TestAuditTrailReplay:
    def test_replay_rebuilds_the_session(self) -> None:
        """Replaying the inputs gives the same steps and verdict, without personal data."""
        session, events = record()
        replayed = AuditTrail.replay(POLICY, events)
        assert session.verdict is not None
        assert session.verdict.outcome is Outcome.APPROVED
        assert replayed.verdict == session.verdict
        assert replayed.applicant is None
        assert [(r.state, r.result, r.errors) for r in replayed.steps] == [
            (r.state, r.result, r.errors) for r in session.steps
        ]
        assert all(r.channel_state == {} for r in replayed.steps)
        assert (replayed.deadline_at, replayed.inputs) == (at(3600), len(INPUTS))

    def test_replay_from_jsonl(self) -> None:
        """A trail read back from JSONL replays just the same."""
        session, events = record()
        out = io.StringIO()
        AuditTrail.export_jsonl(events, out)
        read = AuditTrail.read_jsonl(out.getvalue().splitlines())
        assert AuditTrail.replay(POLICY, read).verdict == session.verdict

    def test_other_kinds_are_not_replayed(self) -> None:
        """Only input events feed the core; other kinds are skipped."""
        session, events = record(INPUTS[:2])
        session, extra = AuditTrail.append(
            session, "provider.call", {"provider": "experian"}, at=at(2)
        )
        replayed = AuditTrail.replay(POLICY, [*events, extra])
        assert replayed.step("bureau").attempt == 2
        assert replayed.inputs == 2

    def test_unreadable_input_is_an_integrity_error(self) -> None:
        """A hash-valid trail holding an input the core cannot read names that event."""
        session, events = record(INPUTS[:1])
        session, forged = AuditTrail.append(
            session, "input", {"input": {"type": "Start", "at": "not a time"}}, at=at(1)
        )
        with pytest.raises(
            AuditIntegrityError, match="holds no readable input"
        ) as info:
            AuditTrail.replay(POLICY, [*events, forged])
        assert info.value.index == len(events)

    def test_no_deadline(self) -> None:
        """A session without a deadline replays without one."""
        policy = make_policy(deadline=None)
        _, events = record(INPUTS[:2], policy=policy)
        replayed = AuditTrail.replay(policy, events)
        assert replayed.deadline_at is None
        assert replayed.step("bureau").state is StepState.RUNNING

    def test_wrong_policy(self) -> None:
        """A trail recorded under another policy is ConfigurationError."""
        _, events = record()
        with pytest.raises(ConfigurationError) as info:
            AuditTrail.replay(make_policy("2"), events)
        assert "consumer-loan 1" in str(info.value)
        assert "not consumer-loan 2" in str(info.value)

    def test_empty_trail(self) -> None:
        """An empty trail cannot be replayed."""
        with pytest.raises(AuditIntegrityError, match=r"starts with session\.created"):
            AuditTrail.replay(POLICY, [])

    def test_trail_must_start_with_created(self) -> None:
        """A trail whose first event is not session.created is refused."""
        session = Session(
            session_id="s", applicant=None, policy=POLICY.ref, created_at=T0
        )
        _, event = AuditTrail.input(session, Start(at=T0), at=T0)
        with pytest.raises(AuditIntegrityError) as info:
            AuditTrail.replay(POLICY, [event])
        assert info.value.index == 0

    def test_tampered_trail(self) -> None:
        """A trail that does not verify is not replayed."""
        _, events = record()
        with pytest.raises(AuditIntegrityError):
            AuditTrail.replay(POLICY, [*events[:3], *events[4:]])


# --- the hand-built audit data equals cattrs' ------------------------------------


@attrs.frozen(kw_only=True)
class OtherSignal(Signal):
    pass


@attrs.frozen(kw_only=True)
class OtherEvidence(Evidence):
    pass


@attrs.frozen(kw_only=True)
class OtherResult(ChannelResult):
    pass


@attrs.frozen(kw_only=True)
class OtherChallenge(Challenge):
    pass


def full_result(**changes: Any) -> ChannelResult:
    fields: dict[str, Any] = {
        "status": "failed",
        "signals": [Signal(name="no_answer", detail="rang out")],
        "score": 0.25,
        "evidence": [Evidence(kind="recording", reference="rec-1", detail="d")],
        "attempts": 3,
        "provider": "twilio",
        "started_at": at(1),
        "finished_at": at(2),
        "detail": "no answer",
        "facts": {"band": "A", "n": 1, "x": 1.5, "ok": True, "none": None},
    }
    return ChannelResult(**(fields | changes))


def finished_with(result: ChannelResult) -> StepFinished:
    return StepFinished(
        step_id="call", attempt=2, at=at(5), result=result, channel_state={"k": "v"}
    )


# Inputs built by hand, and inputs whose data only cattrs knows how to build.
COMMON_INPUTS: list[Input] = [
    *INPUTS,
    StepStarted(step_id="sms", attempt=1, at=at(3)),
    StepUpdated(
        step_id="sms",
        attempt=2,
        at=at(4),
        challenge=Challenge(
            step_id="sms",
            kind="code",
            message="enter it",
            destination="+86*******8000",
            url="https://x.test",
            expires_at=at(300),
        ),
        timers=[("resend", at(60)), ("expire", at(300))],
    ),
    StepErrored(step_id="bureau", attempt=1, at=at(2), error="boom", provider="x"),
    TimerFired(timer_id="deadline", at=at(9)),
    Cancel(at=at(10), reason="withdrawn"),
    finished_with(full_result()),
    finished_with(full_result(provider=None, started_at=None, finished_at=None)),
]
UNUSUAL_INPUTS: list[Input] = [
    finished_with(full_result(facts={"when": at(1)})),
    finished_with(full_result(facts={"list": [1, at(1)]})),
    finished_with(full_result(facts=MappingProxyType({"band": "A"}))),
    finished_with(full_result(facts={1: "one"})),
    finished_with(full_result(signals=[OtherSignal(name="s")])),
    finished_with(full_result(evidence=[OtherEvidence(kind="k", reference="r")])),
    finished_with(OtherResult(status="passed")),
    StepStarted(
        step_id="sms",
        attempt=1,
        at=at(3),
        challenge=OtherChallenge(step_id="sms", kind="code"),
    ),
]


def cattrs_input(event: Input) -> dict[str, Any]:
    """What the trail recorded for an input before it was built by hand."""
    data: dict[str, Any] = unstructure(event)
    if "channel_state" in data:
        data["channel_state"] = {}
    return data


class TestAuditData:
    @pytest.mark.parametrize("event", COMMON_INPUTS + UNUSUAL_INPUTS, ids=repr)
    def test_input_data_is_cattrs_data(self, event: Input) -> None:
        """Input data, and so its JSON and hash, is what cattrs made of it."""
        data = _masked_input(event)
        assert data == cattrs_input(event)
        assert canonical_json(data) == canonical_json(cattrs_input(event))

    def test_unknown_input_type(self) -> None:
        """A type the trail does not know fails as it did with cattrs."""

        @attrs.frozen(kw_only=True)
        class Later(Start):
            pass

        with pytest.raises(KeyError):
            _masked_input(Later(at=T0))

    def test_line_without_a_field(self) -> None:
        """A JSON line that lacks a field is not an audit event."""
        with pytest.raises(ValueError, match="not an audit event"):
            AuditEvent.from_json('{"data": {}, "session_id": "s"}')

    def test_effect_summaries_are_cattrs_data(self) -> None:
        """Effect summaries, verdicts apart, are what cattrs made of them."""
        effects = [
            StartStep(
                effect_id="1.0",
                step_id="bureau",
                attempt=1,
                channel="credit_bureau",
                provider="experian",
                idempotency_key="s:bureau:1",
            ),
            CancelStep(effect_id="1.1", step_id="sms", attempt=2, channel="sms_code"),
            NotifyStep(
                effect_id="1.2", step_id="sms", attempt=2, channel="sms", name="resend"
            ),
            ScheduleTimer(effect_id="1.3", timer_id="deadline", due_at=at(3600)),
            CancelTimer(effect_id="1.4", timer_id="deadline"),
        ]
        for effect in effects:
            assert _effect_summary(effect) == unstructure(effect)

    def test_unknown_effect_type(self) -> None:
        """An effect type the trail does not know fails as it did with cattrs."""

        @attrs.frozen(kw_only=True)
        class Later(CancelTimer):
            pass

        with pytest.raises(KeyError):
            _effect_summary(Later(effect_id="1.0", timer_id="t"))

    def test_session_subclass_keeps_its_type(self) -> None:
        """Appending to a session of a subclass returns that subclass."""

        @attrs.frozen(kw_only=True)
        class Kept(Session):
            pass

        session = Kept(session_id="s", applicant=None, policy=POLICY.ref, created_at=T0)
        moved, event = AuditTrail.append(session, "note", {}, at=T0)
        assert type(moved) is Kept
        assert (moved.audit_head, moved.audit_count) == (event.hash, 1)

    def test_policy_ref_subclass(self) -> None:
        """A policy reference of a subclass is recorded as cattrs made it."""

        @attrs.frozen(kw_only=True)
        class Ref(PolicyRef):
            pass

        ref = Ref(name="p", version="1", hash="h")
        session = Session(session_id="s", applicant=None, policy=ref, created_at=T0)
        _, event = AuditTrail.created(session, at=T0)
        assert event.data["policy"] == unstructure(ref)

    def test_canonical_json(self) -> None:
        """The canonical form is json.dumps with sorted keys, compact, str default."""
        value = {"b": [1, 2.5, None, True], "a": {"z": at(1), "y": "é"}}
        assert canonical_json(value) == json.dumps(
            value, sort_keys=True, separators=(",", ":"), default=str
        )

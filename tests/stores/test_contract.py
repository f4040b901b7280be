"""The SessionStore contract: every store passes these, run once per store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import attrs
import pytest

from multiverify import ChannelResult, Policy
from multiverify._audit import AuditEvent, AuditTrail
from multiverify._session import (
    CancelStep,
    CancelTimer,
    Effect,
    NotifyStep,
    RecordVerdict,
    ScheduleTimer,
    Session,
    SessionStatus,
    Start,
    StartStep,
    StepFinished,
    transition,
)
from multiverify.exceptions import ConcurrentUpdateError, SessionNotFoundError
from multiverify.stores import DueTimer, EffectClaim, PendingEffect, SessionStore

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

MakeSession = Callable[[str], Session]


def timer(effect_id: str, timer_id: str = "deadline") -> ScheduleTimer:
    """A small effect whose id and content are easy to tell apart."""
    return ScheduleTimer(effect_id=effect_id, timer_id=timer_id, due_at=T0)


def events(session: Session, count: int) -> tuple[Session, list[AuditEvent]]:
    """Chain ``count`` audit events to ``session``."""
    out = []
    for number in range(count):
        session, event = AuditTrail.append(
            session, "note", {"n": number}, at=T0 + timedelta(seconds=number)
        )
        out.append(event)
    return session, out


def ids(pending: list[PendingEffect]) -> list[tuple[str, str]]:
    """(session id, effect id) pairs, in order."""
    return [(item.session_id, item.effect.effect_id) for item in pending]


class TestCreate:
    async def test_create_stores_version_one(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """A created session loads back equal, at version 1."""
        session = make_session("s1")

        assert await store.create(session) == 1
        assert await store.load("s1") == (session, 1)

    async def test_create_existing_id_conflicts(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Creating an id twice raises ConcurrentUpdateError at version 0 and writes nothing."""
        first = make_session("s1")
        await store.create(first)
        second, audit = events(attrs.evolve(first, facts={"other": True}), 1)

        with pytest.raises(ConcurrentUpdateError) as info:
            await store.create(second, effects=[timer("e1")], audit=audit)

        assert info.value.session_id == "s1"
        assert info.value.expected_version == 0
        assert await store.load("s1") == (first, 1)
        assert await store.pending_effects("s1") == []
        assert await store.audit_events("s1") == []

    async def test_create_writes_effects_and_audit(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Effects and audit events given to create are stored with the session."""
        session, audit = events(make_session("s1"), 2)

        await store.create(session, effects=[timer("e1")], audit=audit)

        assert ids(await store.pending_effects("s1")) == [("s1", "e1")]
        assert await store.audit_events("s1") == audit

    async def test_session_ids_oldest_first(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """session_ids lists every session in creation order, not sorted by id."""
        assert await store.session_ids() == []
        for session_id in ["c", "a", "b"]:
            await store.create(make_session(session_id))

        assert await store.session_ids() == ["c", "a", "b"]


class TestLoad:
    async def test_missing_session(self, store: SessionStore) -> None:
        """Loading an unknown id raises SessionNotFoundError naming it."""
        with pytest.raises(SessionNotFoundError) as info:
            await store.load("nope")

        assert info.value.session_id == "nope"

    async def test_an_id_no_store_could_hold_is_missing(
        self, store: SessionStore
    ) -> None:
        """An id with a NUL (from a URL such as ``/sessions/a%00b``) reads as a session that does not exist."""
        odd = "a\x00b"
        with pytest.raises(SessionNotFoundError) as info:
            await store.load(odd)
        assert info.value.session_id == odd
        assert await store.pending_effects(odd) == []
        assert await store.timers(odd) == []
        assert await store.audit_events(odd) == []

    async def test_realistic_session_round_trips(
        self, store: SessionStore, make_session: MakeSession, policy: Policy
    ) -> None:
        """A started, then decided, session and its effects come back equal."""
        created = make_session("s1")
        created, first = AuditTrail.created(created, at=T0)
        started = transition(policy, created, Start(at=T0))
        assert started.effects
        await store.create(started.session, effects=started.effects, audit=[first])
        assert await store.load("s1") == (started.session, 1)

        finished = StepFinished(
            step_id="bureau",
            attempt=1,
            at=T0 + timedelta(seconds=5),
            result=ChannelResult(status="passed", score=0.9, provider="acme"),
        )
        decided = transition(policy, started.session, finished)
        session, second = AuditTrail.input(decided.session, finished, at=finished.at)
        await store.save(
            session, expected_version=1, effects=decided.effects, audit=[second]
        )

        loaded, version = await store.load("s1")
        assert version == 2
        assert loaded == session
        assert loaded.status is SessionStatus.DECIDED
        assert loaded.verdict is not None
        assert loaded.applicant == session.applicant
        pending = [item.effect for item in await store.pending_effects("s1")]
        assert pending == [*started.effects, *decided.effects]
        assert any(isinstance(effect, RecordVerdict) for effect in pending)
        assert AuditTrail.verify(await store.audit_events("s1")) == 2


class TestSave:
    async def test_save_bumps_version(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Each save returns the next version and replaces the stored session."""
        session = make_session("s1")
        await store.create(session)
        changed = attrs.evolve(session, inputs=1)

        assert await store.save(changed, expected_version=1) == 2
        assert await store.save(changed, expected_version=2) == 3
        assert await store.load("s1") == (changed, 3)

    async def test_stale_version_conflicts_and_writes_nothing(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """A save at a stale version raises and leaves session, outbox and trail as they were."""
        session, audit = events(make_session("s1"), 1)
        await store.create(session, effects=[timer("e1")], audit=audit)
        saved = attrs.evolve(session, inputs=1)
        await store.save(saved, expected_version=1)
        stale, more = events(attrs.evolve(session, inputs=9), 1)

        with pytest.raises(ConcurrentUpdateError) as info:
            await store.save(
                stale, expected_version=1, effects=[timer("e2")], audit=more
            )

        assert info.value.session_id == "s1"
        assert info.value.expected_version == 1
        assert await store.load("s1") == (saved, 2)
        assert ids(await store.pending_effects()) == [("s1", "e1")]
        assert await store.audit_events() == audit

    async def test_future_version_conflicts(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """A version ahead of the stored one is a conflict too."""
        await store.create(make_session("s1"))

        with pytest.raises(ConcurrentUpdateError):
            await store.save(make_session("s1"), expected_version=5)

    async def test_missing_session(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Saving a session that was never created raises SessionNotFoundError."""
        with pytest.raises(SessionNotFoundError) as info:
            await store.save(make_session("ghost"), expected_version=1)

        assert info.value.session_id == "ghost"
        assert await store.session_ids() == []
        assert await store.pending_effects() == []

    async def test_save_without_effects_keeps_outbox_and_trail(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """A save with no effects or events leaves the earlier ones in place."""
        session, audit = events(make_session("s1"), 1)
        await store.create(session, effects=[timer("e1")], audit=audit)

        await store.save(session, expected_version=1)

        assert ids(await store.pending_effects("s1")) == [("s1", "e1")]
        assert await store.audit_events("s1") == audit

    async def test_concurrent_saves_one_wins(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Of many saves racing from the same version, exactly one succeeds."""
        session = make_session("s1")
        await store.create(session)

        async def attempt(number: int) -> int | None:
            try:
                return await store.save(
                    attrs.evolve(session, inputs=number),
                    expected_version=1,
                    effects=[timer(f"e{number}")],
                )
            except ConcurrentUpdateError:
                return None

        results = await asyncio.gather(*(attempt(number) for number in range(20)))

        winners = [
            number for number, result in enumerate(results) if result is not None
        ]
        assert len(winners) == 1
        assert results[winners[0]] == 2
        loaded, version = await store.load("s1")
        assert version == 2
        assert loaded.inputs == winners[0]
        assert ids(await store.pending_effects()) == [("s1", f"e{winners[0]}")]


class TestEffects:
    async def test_outbox_keeps_save_order(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Pending effects come back oldest first, across create and saves."""
        session = make_session("s1")
        await store.create(session, effects=[timer("b"), timer("a")])
        await store.save(session, expected_version=1, effects=[timer("c")])

        assert ids(await store.pending_effects("s1")) == [
            ("s1", "b"),
            ("s1", "a"),
            ("s1", "c"),
        ]

    async def test_every_effect_kind_round_trips(
        self, store: SessionStore, make_session: MakeSession, policy: Policy
    ) -> None:
        """Each kind of effect comes back as the same tagged value."""
        session = make_session("s1")
        decided = transition(
            policy,
            transition(policy, session, Start(at=T0)).session,
            StepFinished(
                step_id="bureau",
                attempt=1,
                at=T0,
                result=ChannelResult(status="failed"),
            ),
        )
        effects: list[Effect] = [
            StartStep(
                effect_id="1",
                step_id="bureau",
                attempt=1,
                channel="credit_bureau",
                provider=None,
                idempotency_key="s1:bureau:1",
            ),
            CancelStep(
                effect_id="2", step_id="bureau", attempt=1, channel="credit_bureau"
            ),
            NotifyStep(
                effect_id="3",
                step_id="bureau",
                attempt=1,
                channel="sms",
                name="reminder",
            ),
            ScheduleTimer(
                effect_id="4",
                timer_id="deadline",
                due_at=datetime(2025, 3, 1, 17, 0, tzinfo=ZoneInfo("Asia/Shanghai")),
            ),
            CancelTimer(effect_id="5", timer_id="deadline"),
            *decided.effects,
        ]
        await store.create(session, effects=effects)

        pending = await store.pending_effects("s1")

        assert [item.effect for item in pending] == effects
        assert [type(item.effect) for item in pending][-1] is RecordVerdict

    async def test_same_effect_id_replaces_in_place(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """An effect saved again under its id is replaced and keeps its place."""
        session = make_session("s1")
        await store.create(session, effects=[timer("a"), timer("b")])
        await store.save(
            session, expected_version=1, effects=[timer("a", timer_id="moved")]
        )

        pending = await store.pending_effects("s1")

        assert ids(pending) == [("s1", "a"), ("s1", "b")]
        assert pending[0].effect == timer("a", timer_id="moved")

    async def test_complete_is_idempotent(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Completing removes an effect; completing again, or unknown ones, does nothing."""
        await store.create(make_session("s1"), effects=[timer("a"), timer("b")])

        await store.complete_effect("s1", "a")
        await store.complete_effect("s1", "a")
        await store.complete_effect("s1", "zzz")
        await store.complete_effect("nobody", "a")
        assert ids(await store.pending_effects("s1")) == [("s1", "b")]

        await store.complete_effect("s1", "b")
        assert await store.pending_effects("s1") == []
        assert await store.pending_effects() == []

    async def test_complete_many_at_once(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """One call completes effects of several sessions; repeats and unknown ones do nothing."""
        claim = EffectClaim(owner="r1", until=T0 + timedelta(seconds=30))
        await store.create(
            make_session("s1"), effects=[timer("a"), timer("b")], claim=claim
        )
        await store.create(make_session("s2"), effects=[timer("c")], claim=claim)

        await store.complete_effects([])
        await store.complete_effects(
            [("s1", "a"), ("s2", "c"), ("s2", "c"), ("s1", "zzz"), ("nobody", "a")]
        )

        assert ids(await store.pending_effects()) == [("s1", "b")]
        assert await store.pending_effects("s2") == []
        assert (
            await store.extend_effect_claims(
                "r1", [("s1", "a"), ("s1", "b"), ("s2", "c")], until=claim.until
            )
            == 1
        )
        taken = await store.claim_effects("w", at=claim.until, until=claim.until)
        assert ids(taken) == [("s1", "b")]

        await store.complete_effects([("s1", "b")])
        assert await store.pending_effects() == []

    async def test_completed_effect_saved_again_is_pending(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """An effect completed and then saved again under its id is pending once more."""
        session = make_session("s1")
        await store.create(session, effects=[timer("a")])
        await store.complete_effect("s1", "a")

        await store.save(session, expected_version=1, effects=[timer("a")])

        assert ids(await store.pending_effects("s1")) == [("s1", "a")]

    async def test_pending_across_sessions(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Without an id, every session's pending effects are listed."""
        await store.create(make_session("s1"), effects=[timer("a1"), timer("a2")])
        await store.create(make_session("s2"), effects=[timer("b1")])
        await store.create(make_session("s3"))

        assert ids(await store.pending_effects()) == [
            ("s1", "a1"),
            ("s1", "a2"),
            ("s2", "b1"),
        ]
        assert ids(await store.pending_effects("s2")) == [("s2", "b1")]
        assert await store.pending_effects("s3") == []
        assert await store.pending_effects("unknown") == []

    async def test_interleaved_sessions_keep_each_order(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """With saves interleaved, each session's effects still come back in save order."""
        one, two = make_session("s1"), make_session("s2")
        await store.create(one, effects=[timer("a1")])
        await store.create(two, effects=[timer("b1")])
        await store.save(one, expected_version=1, effects=[timer("a2")])
        await store.save(two, expected_version=1, effects=[timer("b2")])

        pending = ids(await store.pending_effects())

        assert sorted(pending) == [
            ("s1", "a1"),
            ("s1", "a2"),
            ("s2", "b1"),
            ("s2", "b2"),
        ]
        assert [item for item in pending if item[0] == "s1"] == [
            ("s1", "a1"),
            ("s1", "a2"),
        ]
        assert [item for item in pending if item[0] == "s2"] == [
            ("s2", "b1"),
            ("s2", "b2"),
        ]


class TestEffectClaims:
    async def test_effects_saved_with_a_claim_carry_it(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """A create or save writes its effects claimed by the owner, in the same write."""
        session = make_session("s1")
        until = T0 + timedelta(seconds=30)
        await store.create(
            session, effects=[timer("a")], claim=EffectClaim(owner="r1", until=until)
        )
        await store.save(
            session,
            expected_version=1,
            effects=[timer("b")],
            claim=EffectClaim(owner="r2", until=until),
        )
        await store.save(session, expected_version=2, effects=[timer("c")])

        pending = await store.pending_effects("s1")

        assert [(p.effect.effect_id, p.claimed_by) for p in pending] == [
            ("a", "r1"),
            ("b", "r2"),
            ("c", None),
        ]
        assert [p.claimed_until for p in pending] == [until, until, None]
        assert [p.claimed(T0) for p in pending] == [True, True, False]
        assert not pending[0].claimed(until)

    async def test_a_live_claim_keeps_claimers_off_until_it_lapses(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Only effects whose claim lapsed (or that have none) are claimed, and then for the claimer."""
        claim = EffectClaim(owner="r1", until=T0 + timedelta(seconds=30))
        await store.create(make_session("s1"), effects=[timer("a")], claim=claim)
        await store.create(make_session("s2"), effects=[timer("b")])
        later = T0 + timedelta(seconds=60)

        taken = await store.claim_effects("w", at=T0, until=later)

        assert ids(taken) == [("s2", "b")]
        assert (taken[0].claimed_by, taken[0].claimed_until) == ("w", later)
        assert await store.claim_effects("w2", at=T0, until=later) == []
        lapsed = await store.claim_effects(
            "w2", at=T0 + timedelta(seconds=30), until=later
        )
        assert ids(lapsed) == [("s1", "a")]
        assert [
            (p.effect.effect_id, p.claimed_by) for p in await store.pending_effects()
        ] == [
            ("a", "w2"),
            ("b", "w"),
        ]

    async def test_claimed_effects_come_with_their_sessions(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Each claimed effect carries its session and version as the claim read them."""
        first = make_session("s1")
        await store.create(first, effects=[timer("a"), timer("b", "other")])
        await store.save(first, expected_version=1)
        await store.create(make_session("s2"), effects=[timer("c")])

        taken = await store.claim_effects("w", at=T0, until=T0 + timedelta(seconds=30))

        assert ids(taken) == [("s1", "a"), ("s1", "b"), ("s2", "c")]
        assert [p.session for p in taken] == [
            await store.load("s1"),
            await store.load("s1"),
            await store.load("s2"),
        ]
        assert [p.session[1] for p in taken if p.session] == [2, 2, 1]

    async def test_claims_are_taken_in_batches_without_overlap(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Claimers racing for free effects get ``limit`` each at most, never the same one."""
        for number in range(10):
            await store.create(make_session(f"s{number}"), effects=[timer("e")])
        until = T0 + timedelta(seconds=30)

        batches = await asyncio.gather(
            *(
                store.claim_effects(f"w{n}", at=T0, until=until, limit=3)
                for n in range(5)
            )
        )

        assert all(len(batch) <= 3 for batch in batches)
        claimed = [key for batch in batches for key in ids(batch)]
        assert sorted(claimed) == sorted((f"s{n}", "e") for n in range(10))
        assert await store.claim_effects("w", at=T0, until=until, limit=0) == []

    async def test_renewal_moves_only_the_owners_claims(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """One call renews many claims; claims of others, and gone effects, are left alone."""
        claim = EffectClaim(owner="r1", until=T0 + timedelta(seconds=30))
        await store.create(
            make_session("s1"), effects=[timer("a"), timer("b")], claim=claim
        )
        await store.create(
            make_session("s2"),
            effects=[timer("c")],
            claim=EffectClaim(owner="r2", until=claim.until),
        )
        later = T0 + timedelta(seconds=90)

        moved = await store.extend_effect_claims(
            "r1", [("s1", "a"), ("s1", "b"), ("s2", "c"), ("s1", "gone")], until=later
        )

        assert moved == 2
        assert [p.claimed_until for p in await store.pending_effects()] == [
            later,
            later,
            claim.until,
        ]
        assert await store.extend_effect_claims("r1", [], until=later) == 0
        at = T0 + timedelta(seconds=60)
        assert ids(await store.claim_effects("w", at=at, until=later)) == [("s2", "c")]
        # An end in the past gives the claim back at once.
        assert await store.extend_effect_claims("r1", [("s1", "a")], until=T0) == 1
        assert ids(await store.claim_effects("w", at=at, until=later)) == [("s1", "a")]

    async def test_saving_an_effect_again_replaces_its_claim(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """An effect saved again under its id carries the new save's claim (or none)."""
        session = make_session("s1")
        claim = EffectClaim(owner="r1", until=T0 + timedelta(seconds=30))
        await store.create(session, effects=[timer("a")], claim=claim)

        await store.save(session, expected_version=1, effects=[timer("a")])

        assert ids(await store.claim_effects("w", at=T0, until=claim.until)) == [
            ("s1", "a")
        ]

    async def test_a_completed_effect_leaves_with_its_claim(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Completing an effect removes its claim: nothing is claimed, nothing renewed."""
        claim = EffectClaim(owner="r1", until=T0 + timedelta(seconds=30))
        await store.create(make_session("s1"), effects=[timer("a")], claim=claim)

        await store.complete_effect("s1", "a")

        assert await store.extend_effect_claims("r1", [("s1", "a")], until=T0) == 0
        assert await store.claim_effects("w", at=claim.until, until=claim.until) == []

    async def test_save_completes_effects_and_fires_a_timer_in_the_same_write(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """``completed`` effects and the ``fired_timer`` go with the save that records them."""
        session = make_session("s1")
        claim = EffectClaim(owner="r1", until=T0 + timedelta(seconds=30))
        await store.create(
            session, effects=[timer("a"), timer("b"), timer("c")], claim=claim
        )
        await store.schedule_timer("s1", "deadline", T0)
        await store.schedule_timer("s1", "other", T0)

        await store.save(
            session,
            expected_version=1,
            effects=[timer("d")],
            completed=["a", "c", "unknown"],
            fired_timer="deadline",
        )

        assert ids(await store.pending_effects("s1")) == [("s1", "b"), ("s1", "d")]
        assert [t.timer_id for t in await store.timers("s1")] == ["other"]
        assert await store.extend_effect_claims("r1", [("s1", "a")], until=T0) == 0

    async def test_timers_are_written_with_the_session(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """A create schedules timers; a save moves, adds and cancels them, in its write."""
        session = make_session("s1")
        later, latest = T0 + timedelta(minutes=5), T0 + timedelta(hours=1)
        await store.create(
            session, timers=[("deadline", latest), ("step", T0), ("poll", T0)]
        )
        assert {t.timer_id: t.due_at for t in await store.timers("s1")} == {
            "deadline": latest,
            "step": T0,
            "poll": T0,
        }

        await store.save(
            session,
            expected_version=1,
            fired_timer="poll",
            timers=[("poll", later), ("retry", later), ("deadline", later)],
            cancelled_timers=["step", "unknown"],
        )

        # The fired timer scheduled again stays, at its new time.
        assert {t.timer_id: t.due_at for t in await store.timers("s1")} == {
            "deadline": later,
            "poll": later,
            "retry": later,
        }
        assert [t.timer_id for t in await store.due_timers(later)] == [
            "deadline",
            "poll",
            "retry",
        ]

    async def test_a_timer_given_twice_takes_its_last_time(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """The same timer listed twice in one write is scheduled once, at the later entry's time."""
        session = make_session("s1")
        later = T0 + timedelta(minutes=5)
        await store.create(session, timers=[("t", T0), ("t", later)])
        await store.save(session, expected_version=1, timers=[("u", later), ("u", T0)])

        assert {t.timer_id: t.due_at for t in await store.timers("s1")} == {
            "t": later,
            "u": T0,
        }

    async def test_a_lost_save_writes_no_timers(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Timers to schedule or cancel go only with a save that wins."""
        session = make_session("s1")
        await store.create(session, timers=[("deadline", T0)])

        with pytest.raises(ConcurrentUpdateError):
            await store.save(
                session,
                expected_version=5,
                timers=[("other", T0)],
                cancelled_timers=["deadline"],
            )
        with pytest.raises(ConcurrentUpdateError):
            await store.create(session, timers=[("other", T0)])

        assert [t.timer_id for t in await store.timers("s1")] == ["deadline"]

    async def test_a_lost_save_completes_nothing_and_fires_nothing(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """A save whose compare-and-set loses leaves the effects and the timer as they were."""
        session = make_session("s1")
        await store.create(session, effects=[timer("a")])
        await store.schedule_timer("s1", "deadline", T0)

        with pytest.raises(ConcurrentUpdateError):
            await store.save(
                session, expected_version=5, completed=["a"], fired_timer="deadline"
            )

        assert ids(await store.pending_effects("s1")) == [("s1", "a")]
        assert [t.timer_id for t in await store.timers("s1")] == ["deadline"]


class TestTimers:
    async def test_schedule_and_list(self, store: SessionStore) -> None:
        """A scheduled timer is listed with its due time."""
        await store.schedule_timer("s1", "deadline", T0)

        assert await store.timers() == [
            DueTimer(session_id="s1", timer_id="deadline", due_at=T0)
        ]

    async def test_schedule_again_moves(self, store: SessionStore) -> None:
        """Scheduling the same timer again moves it instead of adding another."""
        await store.schedule_timer("s1", "deadline", T0)
        await store.schedule_timer("s1", "deadline", T0 + timedelta(hours=1))

        assert await store.timers() == [
            DueTimer(
                session_id="s1", timer_id="deadline", due_at=T0 + timedelta(hours=1)
            )
        ]

    async def test_move_compares_the_due_time(self, store: SessionStore) -> None:
        """``move_timer`` moves a timer only while it is due when expected (as an instant)."""
        later = T0 + timedelta(minutes=5)
        shanghai = ZoneInfo("Asia/Shanghai")
        await store.schedule_timer("s1", "deadline", T0)

        assert not await store.move_timer(
            "s1", "deadline", later, expected=T0 - timedelta(seconds=1)
        )
        assert await store.move_timer(
            "s1", "deadline", later, expected=T0.astimezone(shanghai)
        )
        assert await store.timers("s1") == [
            DueTimer(session_id="s1", timer_id="deadline", due_at=later)
        ]
        assert not await store.move_timer(
            "s1", "deadline", T0, expected=T0
        )  # moved since
        await store.cancel_timer("s1", "deadline")
        assert not await store.move_timer("s1", "deadline", T0, expected=later)
        assert await store.timers() == []

    async def test_move_keeps_the_place_among_ties(self, store: SessionStore) -> None:
        """A moved timer keeps its scheduling order among timers due at the same instant."""
        later = T0 + timedelta(minutes=5)
        await store.schedule_timer("s1", "a", T0)
        await store.schedule_timer("s1", "b", later)

        assert await store.move_timer("s1", "a", later, expected=T0)

        assert [t.timer_id for t in await store.due_timers(later)] == ["a", "b"]
        assert [t.timer_id for t in await store.timers("s1")] == ["a", "b"]

    async def test_cancel(self, store: SessionStore) -> None:
        """Cancelling removes the timer; cancelling an unknown one does nothing."""
        await store.schedule_timer("s1", "deadline", T0)
        await store.schedule_timer("s1", "other", T0)

        await store.cancel_timer("s1", "deadline")
        await store.cancel_timer("s1", "deadline")
        await store.cancel_timer("s2", "other")

        assert [t.timer_id for t in await store.timers()] == ["other"]

    async def test_due_timers_earliest_first_inclusive(
        self, store: SessionStore
    ) -> None:
        """Timers due at or before now come back earliest first; later ones do not."""
        await store.schedule_timer("s1", "late", T0 + timedelta(minutes=2))
        await store.schedule_timer("s2", "now", T0)
        await store.schedule_timer("s1", "early", T0 - timedelta(minutes=5))
        await store.schedule_timer("s3", "future", T0 + timedelta(days=1))

        due = await store.due_timers(T0 + timedelta(minutes=2))

        assert [(t.session_id, t.timer_id) for t in due] == [
            ("s1", "early"),
            ("s2", "now"),
            ("s1", "late"),
        ]
        assert await store.due_timers(T0 - timedelta(minutes=6)) == []

    async def test_due_timers_limit(self, store: SessionStore) -> None:
        """``limit`` caps how many due timers come back, keeping the earliest."""
        for minute in range(5):
            await store.schedule_timer(
                "s1", f"t{minute}", T0 + timedelta(minutes=minute)
            )

        due = await store.due_timers(T0 + timedelta(hours=1), limit=2)

        assert [t.timer_id for t in due] == ["t0", "t1"]
        assert await store.due_timers(T0 + timedelta(hours=1), limit=0) == []

    async def test_ties_keep_scheduling_order(self, store: SessionStore) -> None:
        """Timers due at the same instant come back in the order they were scheduled."""
        for name in ["c", "a", "b"]:
            await store.schedule_timer("s1", name, T0)

        assert [t.timer_id for t in await store.due_timers(T0)] == ["c", "a", "b"]
        assert [t.timer_id for t in await store.timers("s1")] == ["c", "a", "b"]

    async def test_time_zones_compare_as_instants(self, store: SessionStore) -> None:
        """Due times in different zones are ordered by the instant they name."""
        shanghai = ZoneInfo("Asia/Shanghai")
        await store.schedule_timer("s1", "utc", T0 + timedelta(minutes=30))
        # 17:10 in Shanghai is 09:10 UTC: earlier than 09:30 UTC.
        await store.schedule_timer(
            "s1", "local", datetime(2025, 3, 1, 17, 10, tzinfo=shanghai)
        )

        due = await store.due_timers(datetime(2025, 3, 1, 17, 15, tzinfo=shanghai))
        listed = await store.timers()

        assert [t.timer_id for t in due] == ["local"]
        assert due[0].due_at == datetime(2025, 3, 1, 9, 10, tzinfo=UTC)
        assert due[0].due_at.utcoffset() == timedelta(hours=8)
        assert [t.timer_id for t in listed] == ["local", "utc"]

    async def test_filter_by_session(self, store: SessionStore) -> None:
        """``timers(session_id)`` lists only that session's timers, earliest first."""
        await store.schedule_timer("s1", "b", T0 + timedelta(minutes=1))
        await store.schedule_timer("s2", "x", T0)
        await store.schedule_timer("s1", "a", T0)

        assert [t.timer_id for t in await store.timers("s1")] == ["a", "b"]
        assert [t.timer_id for t in await store.timers("s2")] == ["x"]
        assert await store.timers("s3") == []
        assert [t.timer_id for t in await store.timers()] == ["x", "a", "b"]


class TestRecordEventOnce:
    async def test_first_delivery_only(self, store: SessionStore) -> None:
        """The first delivery of a key returns True, every repeat False."""
        assert await store.record_event_once("s1", "evt-1") is True
        assert await store.record_event_once("s1", "evt-1") is False
        assert await store.record_event_once("s1", "evt-1") is False

    async def test_keys_are_per_session(self, store: SessionStore) -> None:
        """The same key in another session, or another key, is new."""
        assert await store.record_event_once("s1", "evt-1") is True
        assert await store.record_event_once("s2", "evt-1") is True
        assert await store.record_event_once("s1", "evt-2") is True

    async def test_a_forgotten_delivery_counts_again(self, store: SessionStore) -> None:
        """Only the forgotten key of that session is new again; an unknown one is no error."""
        assert await store.record_event_once("s1", "evt-1") is True
        assert await store.record_event_once("s2", "evt-1") is True
        await store.forget_event("s1", "evt-1")
        await store.forget_event("s1", "never-seen")
        assert await store.record_event_once("s1", "evt-1") is True
        assert await store.record_event_once("s2", "evt-1") is False


class TestAudit:
    async def test_one_session_in_order(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """A session's events come back in chain order across create and saves, and verify."""
        session, first = events(make_session("s1"), 2)
        await store.create(session, audit=first)
        session, second = events(session, 3)
        await store.save(session, expected_version=1, audit=second)

        trail = await store.audit_events("s1")

        assert trail == [*first, *second]
        assert [event.index for event in trail] == [0, 1, 2, 3, 4]
        assert AuditTrail.verify(trail) == 5

    async def test_every_session(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Without an id, every session's trail comes back, each in order."""
        one, one_first = events(make_session("s1"), 1)
        two, two_first = events(make_session("s2"), 2)
        await store.create(one, audit=one_first)
        await store.create(two, audit=two_first)
        one, one_second = events(one, 1)
        await store.save(one, expected_version=1, audit=one_second)

        trail = await store.audit_events()

        assert trail == [*one_first, *one_second, *two_first]
        assert AuditTrail.verify(trail) == 4

    async def test_unknown_session(self, store: SessionStore) -> None:
        """An unknown session, or an empty store, has an empty trail."""
        assert await store.audit_events("nope") == []
        assert await store.audit_events() == []


class TestAclose:
    async def test_aclose_twice(
        self, store: SessionStore, make_session: MakeSession
    ) -> None:
        """Closing a store is idempotent."""
        await store.create(make_session("s1"))

        await store.aclose()
        await store.aclose()

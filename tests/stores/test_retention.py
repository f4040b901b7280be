"""Retention on every store: personal data of old finished sessions purged, verdicts and audit kept."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from multiverify import (
    Applicant,
    AuditTrail,
    ChannelResult,
    Evidence,
    Outcome,
    Policy,
    ResultStatus,
    Rule,
    Session,
    Step,
    Verifier,
)
from multiverify._audit import AuditEvent
from multiverify._cli import create_cli
from multiverify.channels import ProviderEvent
from multiverify.compliance import PURGED_REFERENCE, purge_personal_data
from multiverify.exceptions import ConcurrentUpdateError, SessionFinishedError
from multiverify.stores import MemoryStore, SessionStore
from multiverify.testing import FakeClock, Scripted, ScriptedChannel

DAY = 86400
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def policy() -> Policy:
    """A bureau report (with a recording) and a video signing (with media), both needed."""
    return Policy(
        name="retention",
        version="1",
        steps=[
            Step(id="bureau", channel="credit_bureau"),
            Step(id="video", channel="video_sign"),
        ],
        rules=[
            Rule(
                outcome="approved",
                when="steps.bureau.status == 'passed' && steps.video.status == 'passed'",
                reason="all.confirmed",
                message="every step passed",
            )
        ],
    )


def channels() -> list[ScriptedChannel]:
    report = ChannelResult(
        status=ResultStatus.PASSED,
        evidence=[
            Evidence(kind="bureau_report", reference="report-1"),
            Evidence(kind="recording", reference="RE123", detail="call recording"),
        ],
    )
    video = ChannelResult(
        status=ResultStatus.PASSED,
        evidence=[Evidence(kind="media", reference="https://media.example/face.jpg")],
    )
    return [
        ScriptedChannel("credit_bureau", [Scripted(result=report)]),
        ScriptedChannel("video_sign", [Scripted.waits(Scripted(result=video))]),
    ]


async def decided(verifier: Verifier, applicant: Applicant) -> Session:
    session = await verifier.start(applicant)
    await verifier.wait_idle()
    await verifier.submit(session.session_id, "video", {"done": True})
    await verifier.wait_idle()
    return await verifier.get(session.session_id)


def evidence(session: Session) -> dict[str, str]:
    return {
        item.kind: item.reference
        for record in session.steps
        if record.result is not None
        for item in record.result.evidence
    }


def verify_export(events: Sequence[AuditEvent], tmp_path: Path) -> str:
    """Export the trail as JSONL and check it with ``multiverify audit verify``."""
    path = tmp_path / "trail.jsonl"
    with path.open("w", encoding="utf-8") as out:
        AuditTrail.export_jsonl(events, out)
    result = CliRunner().invoke(create_cli(), ["audit", "verify", str(path)])
    assert result.exit_code == 0, result.output
    return result.output


class TestPurge:
    async def test_old_finished_sessions_lose_their_personal_data(
        self, store: SessionStore, applicant: Applicant, tmp_path: Path
    ) -> None:
        """Only sessions finished before the cutoff are purged; verdicts, reasons and the audit chain stay."""
        clock = FakeClock(T0)
        async with Verifier(
            policy(), channels=channels(), store=store, clock=clock
        ) as v:
            old = await decided(v, applicant)
            await clock.advance(10 * DAY)
            young = await decided(v, applicant)
            cancelled = await v.start(applicant)
            await v.wait_idle()
            await v.cancel(cancelled.session_id)
            running = await v.start(applicant)
            await v.wait_idle()
            await clock.advance(25 * DAY)

            trial = await v.purge_personal_data("30d", dry_run=True)
            assert trial.purged == (old.session_id,)
            assert trial.dry_run
            assert (await v.get(old.session_id)).applicant is not None

            report = await v.purge_personal_data("30d")
            assert report.purged == (old.session_id,)
            assert report.skipped == ()
            assert report.cutoff == clock.now() - timedelta(days=30)

            purged = await v.get(old.session_id)
            assert purged.applicant is None
            assert all(not record.channel_state for record in purged.steps)
            assert all(record.challenge is None for record in purged.steps)
            assert evidence(purged) == {
                "bureau_report": "report-1",
                "recording": PURGED_REFERENCE,
                "media": PURGED_REFERENCE,
            }
            assert purged.verdict is not None
            assert old.verdict is not None
            assert purged.verdict.outcome is Outcome.APPROVED
            assert purged.verdict.reasons == old.verdict.reasons
            assert purged.verdict.decided_at == old.verdict.decided_at
            kept = [
                e.reference
                for summary in purged.verdict.steps
                if summary.result is not None
                for e in summary.result.evidence
            ]
            assert "RE123" not in kept
            assert "report-1" in kept
            assert purged.facts == old.facts
            assert (await v.get(young.session_id)).applicant is not None

            trail = await store.audit_events(old.session_id)
            assert trail[-1].kind == "session.purged"
            assert trail[-1].data == {
                "applicant": True,
                "channel_states": 2,
                "evidence": 2,
            }
            assert "Li Lei" not in "".join(e.body for e in trail)
            assert "verified (1 session)" in verify_export(trail, tmp_path)
            replayed = AuditTrail.replay(policy(), trail)
            assert replayed.verdict is not None
            assert replayed.verdict.outcome is Outcome.APPROVED

            again = await v.purge_personal_data("30d")
            assert again.purged == ()

            await clock.advance(10 * DAY)
            later = await v.purge_personal_data("30d")
            assert set(later.purged) == {young.session_id, cancelled.session_id}
            assert (await v.get(running.session_id)).applicant is not None
            everything = await store.audit_events()
            assert AuditTrail.verify(everything) == len(everything)
            verify_export(everything, tmp_path)

    async def test_late_event_for_a_purged_session_is_recorded(
        self, store: SessionStore, applicant: Applicant
    ) -> None:
        """A vendor callback after the purge is refused and noted; nothing personal comes back."""
        clock = FakeClock(T0)
        async with Verifier(
            policy(), channels=channels(), store=store, clock=clock
        ) as v:
            session = await decided(v, applicant)
            await clock.advance(31 * DAY)
            await v.purge_personal_data("30d")
            event = ProviderEvent(
                session_id=session.session_id,
                step_id="video",
                kind="decision",
                data={"status": "approved"},
                dedupe_key="late-1",
            )
            with pytest.raises(SessionFinishedError):
                await v.handle_event(event)
            trail = await store.audit_events(session.session_id)
            assert [e.kind for e in trail[-2:]] == ["session.purged", "event.late"]
            assert AuditTrail.verify(trail) == len(trail)
            assert (await v.get(session.session_id)).applicant is None


class Contended(MemoryStore):
    """A store where every save loses its compare-and-set."""

    async def save(self, session: Session, **kwargs: object) -> int:  # type: ignore[override]
        raise ConcurrentUpdateError(
            message="moved", session_id=session.session_id, expected_version=1
        )


async def test_a_session_that_changes_is_skipped(applicant: Applicant) -> None:
    """A purge that loses the compare-and-set skips the session and reports it."""
    clock = FakeClock(T0)
    store = MemoryStore()
    async with Verifier(policy(), channels=channels(), store=store, clock=clock) as v:
        session = await decided(v, applicant)
    contended = Contended()
    contended.__dict__.update(store.__dict__)
    report = await purge_personal_data(
        contended, older_than=timedelta(days=1), now=T0 + timedelta(days=2)
    )
    assert report.purged == ()
    assert report.skipped == (session.session_id,)


async def test_bad_duration(applicant: Applicant) -> None:
    """A retention period that is not a duration is a ValueError."""
    with pytest.raises(ValueError, match="not a duration"):
        await purge_personal_data(MemoryStore(), older_than="a month", now=T0)

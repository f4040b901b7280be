"""Replay: recorded workflow histories replay against the current code, so a change that breaks determinism fails."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from temporalio.client import WorkflowHistory
from temporalio.workflow import NondeterminismError

from multiverify import Policy, _session
from multiverify.temporal import create_replayer

HISTORIES = Path(__file__).with_name("histories")


def recorded(name: str) -> WorkflowHistory:
    """A history recorded by ``record_histories.py``."""
    text = (HISTORIES / f"{name}.json").read_text()
    events = json.loads(text)["events"]
    workflow_id = events[0]["workflowExecutionStartedEventAttributes"]["workflowId"]
    return WorkflowHistory.from_json(workflow_id, text)


class TestReplay:
    @pytest.mark.parametrize("name", sorted(p.stem for p in HISTORIES.glob("*.json")))
    async def test_recorded_history_replays(self, name: str) -> None:
        """A recorded session replays without a non-determinism error."""
        result = await create_replayer().replay_workflow(recorded(name))
        assert result.replay_failure is None

    async def test_a_changed_decision_fails_replay(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A core that no longer starts the same steps cannot replay a recorded session."""
        real = _session.transition

        def forgetful(
            policy: Policy, session: _session.Session, event: _session.Input
        ) -> _session.Transition:
            result = real(policy, session, event)
            kept = tuple(
                e for e in result.effects if not isinstance(e, _session.StartStep)
            )
            return attrs.evolve(result, effects=kept)

        monkeypatch.setattr(_session, "transition", forgetful)
        with pytest.raises(NondeterminismError):
            await create_replayer().replay_workflow(recorded("honest"))

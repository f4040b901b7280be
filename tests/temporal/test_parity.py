"""Parity: the same scenarios on the embedded runtime and on Temporal reach identical verdicts."""

from __future__ import annotations

import pytest
from conftest import running_worker
from temporal_scenarios import SCENARIOS, SPEED, run_embedded, verdict_of
from temporalio.client import Client

from multiverify.sandbox import play
from multiverify.temporal import TemporalVerifier


class TestParity:
    @pytest.mark.parametrize("name", sorted(SCENARIOS))
    async def test_same_verdict_and_reasons(self, client: Client, name: str) -> None:
        """The scenario's verdict, reasons and step endings are the same on both runtimes."""
        scenario = SCENARIOS[name]
        embedded = await run_embedded(scenario)
        async with running_worker(client, scenario.channels()) as task_queue:
            verifier = TemporalVerifier(client, scenario.policy, task_queue=task_queue)
            durable = await play(verifier, scenario.persona, speed=SPEED, poll=0.02)
        assert verdict_of(durable) == verdict_of(embedded)

    def test_covers_every_persona_and_the_edge_cases(self) -> None:
        """Every demo persona has a scenario, and so do failover, timeout fallback, the deadline and a channel's crash."""
        assert set(SCENARIOS) == {
            "honest",
            "no-answer",
            "fraudster",
            "hesitant",
            "failover",
            "call-timeout",
            "deadline",
            "sms-crash",
        }

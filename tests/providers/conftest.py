"""Shared fixtures for the provider tests: a respx router and an httpx client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import respx


@pytest.fixture
def router() -> respx.Router:
    """A respx router; routes a test leaves unused are fine."""
    return respx.Router(assert_all_called=False)


@pytest.fixture
async def client(router: respx.Router) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose transport is the router."""
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(router.async_handler)
    ) as client:
        yield client

"""Fixtures for the store contract suite: every store, and sessions to put in them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

import pytest

from multiverify import Applicant, LoanApplication, Policy, Step
from multiverify._session import Session, new_session
from multiverify.stores import MemoryStore, SessionStore, SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SessionStore]:
    """Each store in turn; the SQLite one on a fresh file."""
    made: SessionStore = (
        MemoryStore()
        if request.param == "memory"
        else SqliteStore(tmp_path / "store.db")
    )
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def policy() -> Policy:
    """A one-step policy."""
    return Policy(
        name="p", version="1", steps=[Step(id="bureau", channel="credit_bureau")]
    )


@pytest.fixture
def applicant() -> Applicant:
    """A realistic applicant with a loan."""
    return Applicant(
        applicant_id="app-1",
        name="Li Lei",
        national_id="110101199001011234",
        phone="+8613800138000",
        date_of_birth=date(1990, 1, 1),
        timezone="Asia/Shanghai",
        loan=LoanApplication(
            amount="5000", currency="CNY", term_months=12, purpose="phone"
        ),
    )


@pytest.fixture
def make_session(policy: Policy, applicant: Applicant) -> Callable[[str], Session]:
    """Build a fresh (not yet started) session with the given id."""

    def make(session_id: str) -> Session:
        return new_session(policy, applicant, session_id=session_id, at=T0)

    return make

"""Compliance: calling windows and attempt schedules in the applicant's local time, and retention."""

from __future__ import annotations

from ._retention import (
    PERSONAL_EVIDENCE,
    PURGED_REFERENCE,
    PurgeReport,
    purge_personal_data,
    purge_session,
)
from ._windows import AttemptSchedule, CallingWindow, NextDayAt, calling_zones

__all__ = [
    "PERSONAL_EVIDENCE",
    "PURGED_REFERENCE",
    "AttemptSchedule",
    "CallingWindow",
    "NextDayAt",
    "PurgeReport",
    "calling_zones",
    "purge_personal_data",
    "purge_session",
]

"""Compliance: calling windows and attempt schedules in the applicant's local time."""

from __future__ import annotations

from ._windows import AttemptSchedule, CallingWindow, NextDayAt, calling_zones

__all__ = ["AttemptSchedule", "CallingWindow", "NextDayAt", "calling_zones"]

"""Policy backtesting: what a policy change would have done to sessions already recorded.

[`simulate_file`][multiverify.backtest.simulate_file] (and
`multiverify simulate`) re-decides recorded sessions under a policy with the
pure core, without calling any vendor: each step the policy starts gets the
result the recording holds for it, by step id (or by channel). A step the
recording cannot answer is reported as missing evidence, never guessed.

>>> from multiverify.policy import Policy, Rule, Step
>>> from multiverify import ChannelResult
>>> policy = Policy(
...     name="p", version="1",
...     steps=[Step(id="sms", channel="sms_code", price=0.05)],
...     rules=[Rule(outcome="approved", when="steps.sms.status == 'passed'", reason="ok")],
... )
>>> recorded = RecordedSession(session_id="s1", steps={
...     "sms": RecordedStep(step_id="sms", channel="sms_code",
...                         result=ChannelResult(status="passed"))})
>>> replay(policy, recorded).outcome.value
'approved'
>>> simulate(policy, [recorded]).policy.cost.total
0.05
"""

from __future__ import annotations

from ._html import render_html
from ._records import (
    RecordedSession,
    RecordedStep,
    load_labels,
    load_sessions,
    parse_labels,
    parse_sessions,
)
from ._replay import Plan, SimulatedSession, replay
from ._report import (
    COLUMNS,
    MISSING_EVIDENCE,
    OUTCOMES,
    CostSummary,
    LabelSummary,
    MissingEvidence,
    PolicySummary,
    RecordedCheck,
    ReviewLoad,
    SimulationReport,
    StepCost,
    VerdictChange,
)
from ._simulate import Progress, simulate, simulate_file

__all__ = [
    "COLUMNS",
    "MISSING_EVIDENCE",
    "OUTCOMES",
    "CostSummary",
    "LabelSummary",
    "MissingEvidence",
    "Plan",
    "PolicySummary",
    "Progress",
    "RecordedCheck",
    "RecordedSession",
    "RecordedStep",
    "ReviewLoad",
    "SimulatedSession",
    "SimulationReport",
    "StepCost",
    "VerdictChange",
    "load_labels",
    "load_sessions",
    "parse_labels",
    "parse_sessions",
    "render_html",
    "replay",
    "simulate",
    "simulate_file",
]

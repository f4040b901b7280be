"""The policy model: steps, rules and settings as plain, validated, hashed data."""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import attrs

from .._duration import format_duration, parse_duration
from .._results import Outcome, PolicyRef, ResultStatus
from .._specs import BUILTIN_CHANNELS, ChannelSpec
from ..exceptions import PolicyError, PolicyProblem
from ._cel import ROOTS, Condition, ConditionError, compile_condition
from ._review import (
    ReviewSettings,
    each_at,
    reason_code_ok,
    review_dict,
    review_problems,
    sequence_at,
    texts_at,
)
from ._review import invalid as _invalid

__all__ = [
    "STEP_FIELDS",
    "STEP_STATUSES",
    "Fallback",
    "Policy",
    "RetrySettings",
    "Rule",
    "Step",
]

_ID = re.compile(r"[a-z][a-z0-9_]{0,62}")

#: Values ``steps.<id>.status`` takes in conditions.
STEP_STATUSES = frozenset(
    {"pending", "skipped", "running", "waiting"}
    | {status.value for status in ResultStatus}
)
#: Fields of ``steps.<id>`` in conditions.
STEP_FIELDS = frozenset({"status", "signals", "score", "attempts", "provider", "facts"})
APPLICANT_FIELDS = frozenset(
    {"id", "age", "phone_country", "timezone", "locale", "contacts", "has_address"}
)
APPLICATION_FIELDS = frozenset(
    {
        "amount",
        "currency",
        "term_months",
        "purpose",
        "fees",
        "annual_rate",
        "installments",
        "installment_amount",
    }
)


# Values of the right type for every name a condition may read: evaluating a
# condition over them finds what fails for any value (comparing a score with
# text) or yields no boolean. Steps appear as they do once they passed.
_PROBE_APPLICANT = {
    "id": "applicant",
    "age": 30,
    "phone_country": "CN",
    "timezone": "Asia/Shanghai",
    "locale": "en",
    "contacts": 1,
    "has_address": True,
}
_PROBE_APPLICATION = {
    "amount": 1000.0,
    "currency": "CNY",
    "term_months": 12,
    "purpose": "purpose",
    "fees": 10.0,
    "annual_rate": 0.1,
    "installments": 12,
    "installment_amount": 100.0,
}
_PROBE_STEP = {
    "status": "passed",
    "signals": [],
    "score": 0.5,
    "attempts": 1,
    "provider": "provider",
    "facts": {},
}
# The engine's words for an operation no value of these types supports.
_TYPE_ERROR = "No such overload"


# A policy built in Python reports a bad value as the file loader does: a
# PolicyError whose problem names the field (``retry.attempts``), never a bare
# ValueError or TypeError from deep inside a converter.


def _providers(values: Iterable[str]) -> tuple[str, ...]:
    return sequence_at("providers", values)


def _after(values: Iterable[str]) -> tuple[str, ...]:
    return sequence_at("after", values)


def _steps(values: Iterable[Step]) -> tuple[Step, ...]:
    return sequence_at("steps", values)


def _rules(values: Iterable[Rule]) -> tuple[Rule, ...]:
    return sequence_at("rules", values)


def _instance_at(path: str, kind: type, *, optional: bool = False) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, kind) and not (optional and value is None):
            raise _invalid(
                path, f"expected a {kind.__name__}, got {type(value).__name__}"
            )

    return check


def _boolean_at(path: str) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, bool):
            raise _invalid(path, f"expected true or false, got {type(value).__name__}")

    return check


def _table_at(path: str, *, of_tables: bool = False) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, Mapping):
            raise _invalid(path, f"expected a table, got {type(value).__name__}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _invalid(path, f"keys must be strings, got {key!r}")
            if of_tables and not isinstance(item, Mapping):
                raise _invalid(
                    f"{path}.{key}", f"expected a table, got {type(item).__name__}"
                )

    return check


def _one_of(value: Any, kind: type[enum.StrEnum], what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(sorted(member.value for member in kind))
        raise ValueError(f"{value!r} is not {what} (one of {names})") from None


def _statuses_at(path: str, values: Any) -> frozenset[ResultStatus]:
    if isinstance(values, str):
        raise _invalid(path, f"expected a list of result statuses, got {values!r}")
    try:
        return frozenset(
            _one_of(value, ResultStatus, "a result status") for value in values
        )
    except (ValueError, TypeError) as exc:
        raise _invalid(path, str(exc)) from None


def _outcome_at(path: str, value: Any) -> Outcome:
    try:
        outcome: Outcome = _one_of(value, Outcome, "an outcome")
    except ValueError as exc:
        raise _invalid(path, str(exc)) from None
    return outcome


def _seconds_at(path: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _invalid(path, str(exc)) from None


def _optional_seconds_at(path: str, value: Any) -> float | None:
    return None if value is None else _seconds_at(path, value)


# Named converters, one per field, as the attrs plugin for mypy needs them.


def _fallback_on(values: Any) -> frozenset[ResultStatus]:
    return _statuses_at("fallback.on", values)


def _rule_outcome(value: Any) -> Outcome:
    return _outcome_at("outcome", value)


def _default_outcome(value: Any) -> Outcome:
    return _outcome_at("default", value)


def _deadline_outcome(value: Any) -> Outcome:
    return _outcome_at("on_deadline", value)


def _deadline(value: Any) -> float | None:
    return _optional_seconds_at("deadline", value)


def _step_timeout(value: Any) -> float | None:
    return _optional_seconds_at("timeout", value)


def _retry_timeout(value: Any) -> float | None:
    return _optional_seconds_at("retry.timeout", value)


def _wait_initial(value: Any) -> float:
    return _seconds_at("retry.wait_initial", value)


def _wait_max(value: Any) -> float:
    return _seconds_at("retry.wait_max", value)


def _wait_jitter(value: Any) -> float:
    return _seconds_at("retry.wait_jitter", value)


def _text_at(path: str, *, optional: bool = False) -> Any:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, str) and not (optional and value is None):
            raise _invalid(path, f"expected a string, got {type(value).__name__}")

    return check


def _attempts(_inst: object, _attr: object, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(
            "retry.attempts", f"expected an integer, got {type(value).__name__}"
        )
    if value < 1:
        raise _invalid("retry.attempts", f"must be at least 1, got {value}")


@attrs.frozen(kw_only=True)
class RetrySettings:
    """How a step retries transient provider errors (stamina-style).

    Attributes:
        attempts: total tries per provider, the first included.
        timeout: total seconds allowed for all tries, or ``None``.
        wait_initial: the first backoff, in seconds.
        wait_max: the longest backoff, in seconds.
        wait_jitter: up to this many random seconds added to each backoff.

    A vendor's ``Retry-After`` replaces the computed backoff; when it asks
    for more than ``wait_max``, the step stops retrying that provider and
    fails over. Only errors marked retryable are retried.
    """

    attempts: int = attrs.field(default=3, validator=_attempts)
    timeout: float | None = attrs.field(default=None, converter=_retry_timeout)
    wait_initial: float = attrs.field(default=0.1, converter=_wait_initial)
    wait_max: float = attrs.field(default=5.0, converter=_wait_max)
    wait_jitter: float = attrs.field(default=0.0, converter=_wait_jitter)


@attrs.frozen(kw_only=True)
class Fallback:
    """Start ``step`` when the owning step ends with one of ``on``."""

    step: str = attrs.field(validator=_text_at("fallback.step"))
    on: frozenset[ResultStatus] = attrs.field(
        default=frozenset(
            {ResultStatus.FAILED, ResultStatus.ERROR, ResultStatus.TIMEOUT}
        ),
        converter=_fallback_on,
    )


@attrs.frozen(kw_only=True)
class Step:
    """One step of a policy: a channel, when it runs, and what happens if it fails.

    Attributes:
        id: unique within the policy; conditions use it as ``steps.<id>``.
        channel: the channel's registered name.
        timeout: seconds before the step times out (``None``: only the
            session deadline bounds it).
        retry: retries of transient provider errors.
        providers: vendors in failover order; empty uses the channel's own.
        after: steps that must have ended first.
        when: a CEL condition; false skips the step.
        fallback: a step started when this one ends badly.
        optional: the default outcome does not wait for this step.
        options: channel settings, passed to the channel as they are.
        price: what one attempt of the step costs at the vendor (in the
            lender's own accounting unit), for cost estimates such as
            [`simulate`][multiverify.backtest.simulate]; ``None``: not priced.
    """

    id: str = attrs.field(validator=_text_at("id"))
    channel: str = attrs.field(validator=_text_at("channel"))
    timeout: float | None = attrs.field(default=None, converter=_step_timeout)
    retry: RetrySettings = attrs.field(
        factory=RetrySettings, validator=_instance_at("retry", RetrySettings)
    )
    providers: tuple[str, ...] = attrs.field(
        default=(), converter=_providers, validator=texts_at("providers")
    )
    after: tuple[str, ...] = attrs.field(
        default=(), converter=_after, validator=texts_at("after")
    )
    when: str | None = attrs.field(
        default=None, validator=_text_at("when", optional=True)
    )
    fallback: Fallback | None = attrs.field(
        default=None, validator=_instance_at("fallback", Fallback, optional=True)
    )
    optional: bool = attrs.field(default=False, validator=_boolean_at("optional"))
    # A dict cannot be hashed; eq still compares it.
    options: Mapping[str, Any] = attrs.field(
        factory=dict, hash=False, validator=_table_at("options")
    )
    price: float | None = None


@attrs.frozen(kw_only=True)
class Rule:
    """A decision rule: when ``when`` holds, the verdict is ``outcome``.

    A rule is evaluated once every step it reads has ended, in order: the
    first rule that holds decides, and a rule still waiting for its steps
    holds back the rules after it.
    """

    outcome: Outcome = attrs.field(converter=_rule_outcome)
    when: str = attrs.field(validator=_text_at("when"))
    reason: str = attrs.field(validator=_text_at("reason"))
    message: str = attrs.field(default="", validator=_text_at("message"))


def _retry_dict(retry: RetrySettings) -> dict[str, Any]:
    out: dict[str, Any] = {"attempts": retry.attempts}
    if retry.timeout is not None:
        out["timeout"] = format_duration(retry.timeout)
    out["wait_initial"] = format_duration(retry.wait_initial)
    out["wait_max"] = format_duration(retry.wait_max)
    out["wait_jitter"] = format_duration(retry.wait_jitter)
    return out


def _step_dict(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"id": step.id, "channel": step.channel}
    if step.timeout is not None:
        out["timeout"] = format_duration(step.timeout)
    if step.retry != RetrySettings():
        out["retry"] = _retry_dict(step.retry)
    if step.providers:
        out["providers"] = list(step.providers)
    if step.after:
        out["after"] = list(step.after)
    if step.when is not None:
        out["when"] = step.when
    if step.fallback is not None:
        out["fallback"] = {
            "step": step.fallback.step,
            "on": sorted(status.value for status in step.fallback.on),
        }
    if step.optional:
        out["optional"] = True
    if step.options:
        out["options"] = dict(step.options)
    if step.price is not None:
        out["price"] = step.price
    return out


def _policy_dict(policy: Policy) -> dict[str, Any]:
    out: dict[str, Any] = {"name": policy.name, "version": policy.version}
    if policy.deadline is not None:
        out["deadline"] = format_duration(policy.deadline)
        out["on_deadline"] = policy.on_deadline.value
    out["default"] = policy.default.value
    if policy.score is not None:
        out["score"] = policy.score
    out["steps"] = [_step_dict(s) for s in policy.steps]
    out["rules"] = [
        {"outcome": r.outcome.value, "when": r.when, "reason": r.reason}
        | ({"message": r.message} if r.message else {})
        for r in policy.rules
    ]
    if policy.scripts:
        out["scripts"] = {name: dict(body) for name, body in policy.scripts.items()}
    if policy.review is not None:
        out["review"] = review_dict(policy.review, _step_dict)
    return out


@attrs.frozen(kw_only=True)
class Reads:
    """The parts of the condition context a policy's conditions read.

    ``None`` means "all of it". Keeping the context to these parts makes each
    evaluation cheaper: the CEL binding converts every value it is given.
    """

    applicant: frozenset[str] | None = frozenset()
    application: frozenset[str] | None = frozenset()
    steps: Mapping[str, frozenset[str] | None] | None = attrs.field(factory=dict)


def _reads(conditions: Iterable[Condition]) -> Reads:
    roots: dict[str, set[str] | None] = {"applicant": set(), "application": set()}
    steps: dict[str, set[str] | None] | None = {}
    for condition in conditions:
        for root in condition.whole:
            if root == "steps":
                steps = None
            else:
                roots[root] = None
        for root, *rest in condition.chains:
            if root == "steps":
                if steps is None:
                    continue
                step_id, *fields = rest
                if not fields:
                    steps[step_id] = None
                else:
                    known = steps.setdefault(step_id, set())
                    if known is not None:
                        known.add(fields[0])
            else:
                fields_read = roots[root]
                if fields_read is not None:
                    fields_read.add(rest[0])

    def frozen(value: set[str] | None) -> frozenset[str] | None:
        return None if value is None else frozenset(value)

    return Reads(
        applicant=frozen(roots["applicant"]),
        application=frozen(roots["application"]),
        steps=None
        if steps is None
        else {step_id: frozen(fields) for step_id, fields in steps.items()},
    )


@attrs.frozen(kw_only=True)
class Policy:
    """Steps and decision rules, versioned and hashed; immutable once built.

    Building a policy validates it: every located mistake is collected into
    one [`PolicyError`][multiverify.exceptions.PolicyError]. Channel names are
    checked against the built-in channels plus ``channels`` when given; the
    [`Verifier`][multiverify.Verifier] checks them again against what it has.

    Attributes:
        name: the policy's name.
        version: its version, recorded in every verdict.
        steps: the steps.
        rules: decision rules, first match wins.
        default: the outcome when every step has ended and no rule held.
        deadline: seconds from start after which the session takes ``on_deadline``.
        on_deadline: the outcome at the deadline.
        score: a CEL expression for the verdict's score; by default the mean
            of the step scores.
        scripts: named call scripts (plain tables); a phone-call step names
            one with ``options.script = "<name>"``.
        review: how people decide its verdicts of ``review`` (the
            ``[review]`` table); ``None`` leaves such verdicts final.
    """

    name: str = attrs.field(validator=_text_at("name"))
    version: str = attrs.field(validator=_text_at("version"))
    steps: tuple[Step, ...] = attrs.field(
        converter=_steps, validator=each_at("steps", Step)
    )
    rules: tuple[Rule, ...] = attrs.field(
        default=(), converter=_rules, validator=each_at("rules", Rule)
    )
    default: Outcome = attrs.field(default=Outcome.REVIEW, converter=_default_outcome)
    deadline: float | None = attrs.field(default=None, converter=_deadline)
    on_deadline: Outcome = attrs.field(
        default=Outcome.EXPIRED, converter=_deadline_outcome
    )
    score: str | None = attrs.field(
        default=None, validator=_text_at("score", optional=True)
    )
    scripts: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, hash=False, validator=_table_at("scripts", of_tables=True)
    )
    review: ReviewSettings | None = attrs.field(
        default=None, validator=_instance_at("review", ReviewSettings, optional=True)
    )
    channels: Mapping[str, ChannelSpec] = attrs.field(
        factory=dict, eq=False, repr=False, hash=False, validator=_table_at("channels")
    )
    source: str | None = attrs.field(default=None, eq=False, repr=False)
    _conditions: dict[str, Condition] = attrs.field(
        init=False, factory=dict, eq=False, repr=False, hash=False
    )
    _hash: str = attrs.field(init=False, default="", eq=False, repr=False, hash=False)
    _ref: PolicyRef | None = attrs.field(
        init=False, default=None, eq=False, repr=False, hash=False
    )
    _by_id: dict[str, Step] = attrs.field(
        init=False, factory=dict, eq=False, repr=False, hash=False
    )
    _fallback_targets: frozenset[str] = attrs.field(
        init=False, default=frozenset(), eq=False, repr=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        by_id: dict[str, Step] = {}
        for step in self.all_steps:
            by_id.setdefault(step.id, self._resolved(step))
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(
            self,
            "_fallback_targets",
            frozenset(s.fallback.step for s in self.steps if s.fallback is not None),
        )
        known = BUILTIN_CHANNELS | dict(self.channels)
        conditions, problems = _validate(self, known)
        if problems:
            count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
            raise PolicyError(
                message=f"policy {self.name!r} is invalid ({count})",
                problems=tuple(
                    attrs.evolve(problem, source=self.source) for problem in problems
                ),
            )
        object.__setattr__(self, "_conditions", conditions)
        document = json.dumps(
            _policy_dict(self), sort_keys=True, separators=(",", ":"), default=str
        )
        digest = hashlib.sha256(document.encode()).hexdigest()
        object.__setattr__(self, "_hash", digest)
        # One reference shared by every session and verdict of the policy.
        ref = PolicyRef(name=self.name, version=self.version, hash=digest)
        object.__setattr__(self, "_ref", ref)

    def _resolved(self, step: Step) -> Step:
        """The step with a named script in its options replaced by the script's table."""
        name = step.options.get("script")
        if isinstance(name, str) and name in self.scripts:
            return attrs.evolve(
                step, options={**step.options, "script": self.scripts[name]}
            )
        return step

    @property
    def hash(self) -> str:
        """The SHA-256 of the policy's canonical JSON: same content, same hash."""
        return self._hash

    @property
    def ref(self) -> PolicyRef:
        """Name, version and hash, as verdicts record them."""
        assert self._ref is not None  # noqa: S101 - set when the policy is built
        return self._ref

    def step(self, step_id: str) -> Step:
        """Return the step with this id.

        A script its options name (``script = "<name>"``) comes resolved:
        ``options["script"]`` is then that entry of ``scripts``.

        Raises:
            KeyError: no such step.
        """
        return self._by_id[step_id]

    @property
    def all_steps(self) -> tuple[Step, ...]:
        """The steps, then the review evidence steps reviewers may ask for."""
        if self.review is None:
            return self.steps
        return (*self.steps, *self.review.evidence)

    @property
    def fallback_targets(self) -> frozenset[str]:
        """Steps that start only as another step's fallback."""
        return self._fallback_targets

    def condition(self, source: str) -> Condition:
        """The compiled form of a condition of this policy."""
        return self._conditions[source]

    def to_dict(self) -> dict[str, Any]:
        """The policy as a plain document, in the shape policy files use."""
        return _policy_dict(self)

    def check_channels(self, channels: Iterable[str]) -> list[PolicyProblem]:
        """Problems for steps whose channel is not among ``channels``."""
        names = set(channels)
        return [
            PolicyProblem(
                path=f"{path}.channel",
                message=f"unknown channel {step.channel!r} (known: {', '.join(sorted(names))})",
                source=self.source,
            )
            for path, step in _located_steps(self)
            if step.channel not in names
        ]


def _located_steps(policy: Policy) -> list[tuple[str, Step]]:
    """Every step with its place in the document: ``steps[i]``, ``review.evidence[i]``."""
    located = [(f"steps[{index}]", step) for index, step in enumerate(policy.steps)]
    if policy.review is not None:
        located.extend(
            (f"review.evidence[{index}]", step)
            for index, step in enumerate(policy.review.evidence)
        )
    return located


def _validate(
    policy: Policy, known: Mapping[str, ChannelSpec]
) -> tuple[dict[str, Condition], list[PolicyProblem]]:
    validator = _Validator(policy, known)
    validator.run()
    return validator.conditions, validator.problems


class _Validator:
    """Collects every located mistake of one policy. Strictly private."""

    def __init__(self, policy: Policy, known: Mapping[str, ChannelSpec]) -> None:
        self.policy = policy
        self.known = known
        self.problems: list[PolicyProblem] = []
        self.conditions: dict[str, Condition] = {}
        self.ids: dict[str, int] = {}

    def problem(self, path: str, message: str) -> None:
        self.problems.append(PolicyProblem(path=path, message=message))

    def run(self) -> None:
        policy = self.policy
        if not policy.name.strip():
            self.problem("name", "must not be empty")
        if not policy.version.strip():
            self.problem("version", "must not be empty")
        if not policy.steps:
            self.problem("steps", "a policy needs at least one step")
        if policy.deadline is not None and policy.deadline <= 0:
            self.problem("deadline", "must be longer than zero")
        self.check_ids_and_channels()
        for index, step in enumerate(policy.steps):
            self.check_references(index, step)
            self.check_timing(f"steps[{index}]", step)
            self.check_options(f"steps[{index}]", step)
            self.check_price(index, step)
        self.check_review()
        self.check_scripts()
        self.check_fallback_targets()
        cycle = _find_cycle(policy, self.ids)
        if cycle:
            self.problem(
                f"steps[{self.ids[cycle[0]]}].after",
                "dependency cycle: " + " -> ".join([*cycle, cycle[0]]),
            )
        for index, step in enumerate(policy.steps):
            if step.when is not None:
                path = f"steps[{index}].when"
                condition = self.check_condition(path, step.when)
                if condition is not None and condition.constant:
                    # The runtime skips a step whose condition fails: one that
                    # fails for every applicant would skip it silently.
                    self.check_evaluates(path, condition)
        self.check_rules()
        if policy.score is not None:
            self.check_condition("score", policy.score, number=True)

    def check_timing(self, path: str, step: Step) -> None:
        """Timeouts that leave no time at all, backoffs in the wrong order, providers twice."""
        if step.timeout is not None and step.timeout <= 0:
            self.problem(f"{path}.timeout", "must be longer than zero")
        retry = step.retry
        if retry.timeout is not None and retry.timeout <= 0:
            self.problem(f"{path}.retry.timeout", "must be longer than zero")
        if retry.wait_initial > retry.wait_max:
            self.problem(
                f"{path}.retry.wait_initial",
                f"{format_duration(retry.wait_initial)} is longer than wait_max "
                f"({format_duration(retry.wait_max)})",
            )
        seen: set[str] = set()
        for position, provider in enumerate(step.providers):
            if provider in seen:
                self.problem(
                    f"{path}.providers[{position}]", f"duplicate provider {provider!r}"
                )
            seen.add(provider)

    def check_ids_and_channels(self) -> None:
        for index, step in enumerate(self.policy.steps):
            if not _ID.fullmatch(step.id):
                self.problem(
                    f"steps[{index}].id",
                    f"{step.id!r} is not a valid step id (lowercase letters, digits, _)",
                )
            if step.id in self.ids:
                self.problem(f"steps[{index}].id", f"duplicate step id {step.id!r}")
            self.ids.setdefault(step.id, index)
            if step.channel not in self.known:
                self.problem(
                    f"steps[{index}].channel",
                    f"unknown channel {step.channel!r} "
                    f"(known: {', '.join(sorted(self.known))})",
                )

    def check_price(self, index: int, step: Step) -> None:
        price = step.price
        if price is None:
            return
        if isinstance(price, bool) or not isinstance(price, int | float):
            self.problem(
                f"steps[{index}].price",
                f"expected a number, got {type(price).__name__}",
            )
        elif not math.isfinite(price) or price < 0:
            self.problem(
                f"steps[{index}].price", f"must be a number of at least 0, got {price}"
            )

    def check_options(self, path: str, step: Step) -> None:
        spec = self.known.get(step.channel)
        if spec is None or spec.check_options is None:
            return
        self.problems.extend(
            spec.check_options(step.options, self.policy.scripts, f"{path}.options")
        )

    def check_review(self) -> None:
        """The ``[review]`` table, its evidence steps' ids, channels and options."""
        review = self.policy.review
        if review is None:
            return
        self.problems.extend(review_problems(review, self.ids))
        for index, step in enumerate(review.evidence):
            path = f"review.evidence[{index}]"
            if not _ID.fullmatch(step.id):
                self.problem(
                    f"{path}.id",
                    f"{step.id!r} is not a valid step id (lowercase letters, digits, _)",
                )
            if step.channel not in self.known:
                self.problem(
                    f"{path}.channel",
                    f"unknown channel {step.channel!r} "
                    f"(known: {', '.join(sorted(self.known))})",
                )
            self.check_options(path, step)

    def check_scripts(self) -> None:
        """Every named script, whether a step uses it or not."""
        if not self.policy.scripts:
            return
        from .._call_script import script_problems  # noqa: PLC0415 - loaded on use

        used = {
            step.options.get("script")
            for step in self.policy.all_steps
            if step.channel == "phone_call"
        }
        for name, body in self.policy.scripts.items():
            if name in used:
                continue  # checked, located, with the step that uses it
            self.problems.extend(script_problems(body, f"scripts.{name}", name=name))

    def check_references(self, index: int, step: Step) -> None:
        for position, dependency in enumerate(step.after):
            path = f"steps[{index}].after[{position}]"
            if dependency not in self.ids:
                self.problem(path, f"unknown step {dependency!r}")
            elif dependency == step.id:
                self.problem(path, "a step cannot wait for itself")
        if step.fallback is not None:
            path = f"steps[{index}].fallback"
            if step.fallback.step not in self.ids:
                self.problem(f"{path}.step", f"unknown step {step.fallback.step!r}")
            elif step.fallback.step == step.id:
                self.problem(f"{path}.step", "a step cannot be its own fallback")
            if not step.fallback.on:
                self.problem(f"{path}.on", "list at least one result status")

    def check_fallback_targets(self) -> None:
        targets: dict[str, int] = {}
        for index, step in enumerate(self.policy.steps):
            if step.fallback is None or step.fallback.step not in self.ids:
                continue
            target = step.fallback.step
            if target in targets:
                self.problem(
                    f"steps[{index}].fallback.step",
                    f"step {target!r} is already the fallback of steps[{targets[target]}]",
                )
            targets.setdefault(target, index)

    def check_condition(
        self, path: str, source: str, *, number: bool = False
    ) -> Condition | None:
        """Compile ``source`` and check its names and types; keep it when it is sound.

        ``number``: the expression yields a number (a score), not a boolean.
        """
        try:
            condition = compile_condition(source)
        except ConditionError as exc:
            self.problem(path, f"CEL syntax error: {exc}")
            return None
        before = len(self.problems)
        for name in sorted(condition.variables - ROOTS):
            self.problem(
                path, f"unknown name {name!r} (use applicant, application or steps)"
            )
        for chain in condition.chains:
            self.check_chain(path, chain[0], chain[1:])
        if len(self.problems) == before and (number or not condition.constant):
            self.check_types(path, condition, number=number)
        if len(self.problems) > before:
            return None
        self.conditions[source] = condition
        return condition

    def check_types(self, path: str, condition: Condition, *, number: bool) -> None:
        """Evaluate over values of the right types: a type error or a result of
        the wrong kind happens for every value, so the condition can never hold."""
        probe = {
            "applicant": _PROBE_APPLICANT,
            "application": _PROBE_APPLICATION,
            "steps": dict.fromkeys(self.ids, _PROBE_STEP)
            | {step.id: _PROBE_STEP for step in self.policy.all_steps},
        }
        try:
            if number:
                condition.evaluate_number(probe)
            else:
                condition.evaluate(probe)
        except ConditionError as exc:
            text = str(exc)
            if text.startswith("expected a "):
                self.problem(path, "must yield a " + text.removeprefix("expected a "))
            elif _TYPE_ERROR in text:
                self.problem(
                    path,
                    "can never fire: it mixes types no value supports "
                    "(such as a number compared with text)",
                )

    def check_chain(self, path: str, root: str, rest: tuple[str, ...]) -> None:
        # ``rest`` is never empty: a chain reads at least one field of its root.
        if root != "steps":
            fields = APPLICANT_FIELDS if root == "applicant" else APPLICATION_FIELDS
            if rest[0] not in fields:
                self.problem(
                    path,
                    f"unknown field {rest[0]!r} of {root} "
                    f"(known: {', '.join(sorted(fields))})",
                )
        elif rest[0] not in self.ids:
            self.problem(path, f"unknown step {rest[0]!r} in steps.{'.'.join(rest)}")
        elif len(rest) > 1 and rest[1] not in STEP_FIELDS:
            self.problem(
                path,
                f"unknown field {rest[1]!r} of steps.{rest[0]} "
                f"(known: {', '.join(sorted(STEP_FIELDS))})",
            )

    def check_rules(self) -> None:
        seen: dict[str, int] = {}
        always_before: int | None = None
        for index, rule in enumerate(self.policy.rules):
            path = f"rules[{index}].when"
            if not rule.reason.strip():
                self.problem(f"rules[{index}].reason", "must not be empty")
            elif not reason_code_ok(rule.reason):
                self.problem(
                    f"rules[{index}].reason",
                    f"{rule.reason!r} is not a reason code (a stable machine code: "
                    "lowercase letters, digits, _ . -, such as 'bureau.fraud_alert'; "
                    "put the human text in message)",
                )
            condition = self.check_condition(path, rule.when)
            if condition is None:
                continue
            normal = " ".join(rule.when.split())
            if always_before is not None:
                self.problem(
                    path, f"can never fire: rules[{always_before}] always holds first"
                )
            elif normal in seen:
                self.problem(
                    path,
                    f"can never fire: rules[{seen[normal]}] has the same condition",
                )
            elif condition.constant and self.check_constant(path, condition):
                always_before = index
            self.check_literals(path, condition)
            seen.setdefault(normal, index)

    def check_evaluates(self, path: str, condition: Condition) -> None:
        """Report a constant condition that yields no boolean or cannot be evaluated."""
        try:
            condition.evaluate({})
        except ConditionError as exc:
            self.problem(path, f"cannot be evaluated: {exc}")

    def check_constant(self, path: str, condition: Condition) -> bool:
        """Whether a constant rule always holds; report it when it never does."""
        try:
            constant = condition.evaluate({})
        except ConditionError as exc:
            self.problem(path, f"cannot be evaluated: {exc}")
            return False
        if not constant:
            self.problem(path, "can never fire: the condition is always false")
        return constant

    def check_literals(self, path: str, condition: Condition) -> None:
        for step_id, status in condition.status_literals:
            if status not in STEP_STATUSES:
                self.problem(
                    path,
                    f"can never fire: steps.{step_id}.status is never {status!r} "
                    f"(one of {', '.join(sorted(STEP_STATUSES))})",
                )
        for step_id, signal in condition.signal_literals:
            if step_id not in self.ids:
                continue
            spec = self.known.get(self.policy.steps[self.ids[step_id]].channel)
            if spec is not None and spec.signals and signal not in spec.signals:
                self.problem(
                    path,
                    f"can never fire: channel {spec.name!r} never emits signal {signal!r}",
                )


def _dependency_graph(policy: Policy, ids: Mapping[str, int]) -> dict[str, list[str]]:
    """Edges from each step to the steps it waits for; self-edges are left out
    because they are reported on their own."""
    graph = {
        step.id: [d for d in step.after if d in ids and d != step.id]
        for step in policy.steps
    }
    for step in policy.steps:
        fallback = step.fallback
        if fallback is not None and fallback.step in ids and fallback.step != step.id:
            # A fallback starts after its source, so it is an edge too.
            graph[fallback.step].append(step.id)
    return graph


def _find_cycle(policy: Policy, ids: Mapping[str, int]) -> list[str]:
    graph = _dependency_graph(policy, ids)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return path[path.index(nxt) :]
            found = [] if nxt in state else visit(nxt)
            if found:
                return found
        path.pop()
        state[node] = 2
        return []

    for node in graph:
        found = [] if node in state else visit(node)
        if found:
            return found
    return []


def as_timedelta(seconds: float | None) -> timedelta | None:
    """Seconds as a timedelta, keeping ``None``."""
    return None if seconds is None else timedelta(seconds=seconds)

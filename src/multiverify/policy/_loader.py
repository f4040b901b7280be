"""Policies from TOML, YAML and JSON: every structural mistake located, then built.

A document has exactly the shape [`Policy.to_dict`][multiverify.policy.Policy.to_dict]
produces. Its structure is checked by hand, so that each problem names the
place it sits (``steps[2].retry.attempts``) and every problem is reported at
once; the [`Policy`][multiverify.policy.Policy] built from a sound document
then adds its own, semantic, problems.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from .._duration import parse_duration
from .._results import Outcome, ResultStatus
from ..exceptions import PolicyError, PolicyProblem
from ._model import Fallback, Policy, RetrySettings, Rule, Step
from ._review import ReviewSettings

if TYPE_CHECKING:
    from .._specs import ChannelSpec

__all__ = ["load_policy", "parse_policy", "policy_from_dict"]

Format = Literal["toml", "yaml", "json"]

_SUFFIXES: dict[str, Format] = {
    ".toml": "toml",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
}
#: Where a problem that belongs to the whole document is reported.
_DOCUMENT = "(document)"
_TOML_POSITION = re.compile(
    r"^(?P<message>.*?) \(at line (?P<line>\d+), column (?P<column>\d+)\)$"
)

_POLICY_KEYS = frozenset(
    {
        "name",
        "version",
        "deadline",
        "on_deadline",
        "default",
        "score",
        "steps",
        "rules",
        "scripts",
        "review",
    }
)
_STEP_KEYS = frozenset(
    {
        "id",
        "channel",
        "timeout",
        "retry",
        "providers",
        "after",
        "when",
        "fallback",
        "optional",
        "options",
        "price",
    }
)
_RETRY_KEYS = frozenset(
    {"attempts", "timeout", "wait_initial", "wait_max", "wait_jitter"}
)
_FALLBACK_KEYS = frozenset({"step", "on"})
_RULE_KEYS = frozenset({"outcome", "when", "reason", "message"})
_REVIEW_KEYS = frozenset(
    {
        "priority",
        "sla",
        "escalate_by",
        "fallback_after",
        "fallback",
        "lease",
        "approve_reasons",
        "reject_reasons",
        "evidence",
    }
)

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.StrEnum)


def load_policy(
    path: str | os.PathLike[str],
    *,
    channels: Mapping[str, ChannelSpec] | None = None,
) -> Policy:
    """Load and validate a policy file; its suffix names the format.

    ``.toml`` is read with `tomllib`, ``.yaml`` and ``.yml`` as
    YAML (safe loading, YAML 1.2 booleans, duplicate keys refused), ``.json``
    as JSON.

    Args:
        path: the policy file.
        channels: channel specs beyond the built-in ones, by name.

    Returns:
        The validated policy, its ``source`` set to ``path``.

    Raises:
        PolicyError: the file cannot be read (missing, a directory, not
            permitted, not UTF-8) or is not a valid policy; each problem
            carries the file name as its ``source``.
    """
    source = os.fspath(path)
    file_format = _SUFFIXES.get(Path(source).suffix.lower())
    if file_format is None:
        raise _unloadable(
            source,
            f"unknown file type {Path(source).suffix!r} "
            "(use .toml, .yaml, .yml or .json)",
        )
    try:
        data = Path(source).read_bytes()
    except OSError as exc:  # missing, a directory, not permitted
        raise _unloadable(source, f"cannot read it: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _unloadable(source, f"not UTF-8 text: {exc.reason}") from None
    return parse_policy(text, format=file_format, source=source, channels=channels)


def _unloadable(source: str, message: str) -> PolicyError:
    """The error for a policy file that cannot be read as a document at all."""
    problem = PolicyProblem(path=_DOCUMENT, message=message, source=source)
    return PolicyError(message=f"cannot load policy from {source}", problems=(problem,))


def parse_policy(
    text: str,
    *,
    format: Format,  # noqa: A002 - the name callers know from load_policy's suffixes
    source: str | None = None,
    channels: Mapping[str, ChannelSpec] | None = None,
) -> Policy:
    """Parse and validate a policy document held in a string.

    Args:
        text: the document.
        format: ``"toml"``, ``"yaml"`` or ``"json"``.
        source: where the text came from, for problem locations.
        channels: channel specs beyond the built-in ones, by name.

    Returns:
        The validated policy.

    Raises:
        PolicyError: the text does not parse or is not a valid policy.
        ValueError: ``format`` is none of the three.
    """
    parsers: dict[str, Callable[[str], object]] = {
        "toml": tomllib.loads,
        "yaml": _load_yaml,
        "json": _load_json,
    }
    if format not in parsers:
        raise ValueError(f"unknown policy format {format!r} (use toml, yaml or json)")
    try:
        data = parsers[format](text)
    # RecursionError: nesting deeper than the parser can follow.
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError, RecursionError) as exc:
        problem = _syntax_problem(exc, format, source)
        raise PolicyError(
            message=f"policy {_describe(source)} does not parse as {format.upper()}",
            problems=(problem,),
        ) from None
    if not isinstance(data, Mapping):
        problem = PolicyProblem(
            path=_DOCUMENT,
            message=f"expected a table of policy settings, got {_kind(data)}",
            source=source,
        )
        raise PolicyError(
            message=f"policy {_describe(source)} is invalid (1 problem)",
            problems=(problem,),
        )
    return policy_from_dict(data, source=source, channels=channels)


def policy_from_dict(
    data: Mapping[str, Any],
    *,
    source: str | None = None,
    channels: Mapping[str, ChannelSpec] | None = None,
) -> Policy:
    """Build a policy from a plain document, the shape of [`Policy.to_dict`][multiverify.policy.Policy.to_dict].

    ``policy_from_dict(policy.to_dict())`` has the same hash as ``policy``.

    Args:
        data: the document.
        source: where it came from, for problem locations.
        channels: channel specs beyond the built-in ones, by name.

    Returns:
        The validated policy.

    Raises:
        PolicyError: every structural problem (missing or unknown key, wrong
            type, bad duration or outcome), with the semantic problems of
            whatever could be read.
    """
    document: object = data  # callers without a type checker pass anything
    reader = _Reader(source)
    settings = reader.policy(document)
    if reader.problems:
        problems = list(reader.problems)
        if {"name", "version", "steps"} <= settings.keys():
            # What could be read may hold semantic mistakes too: report them
            # in the same round rather than after the first fix.
            try:
                Policy(**settings, source=source, channels=dict(channels or {}))
            except PolicyError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
        name = document.get("name") if isinstance(document, Mapping) else None
        count = len(problems)
        raise PolicyError(
            message=f"policy {_describe(source, name)} is invalid "
            f"({count} problem{'' if count == 1 else 's'})",
            problems=tuple(problems),
        )
    return Policy(**settings, source=source, channels=dict(channels or {}))


def _describe(source: str | None, name: object = None) -> str:
    if isinstance(name, str) and name.strip():
        return repr(name)
    return source if source is not None else "document"


def _syntax_problem(
    exc: Exception, file_format: str, source: str | None
) -> PolicyProblem:
    """Locate a parser's error by line and column when the parser says where."""
    message = str(exc)
    line: int | None = None
    column: int | None = None
    if isinstance(exc, RecursionError):
        message = "nested too deeply"
    elif isinstance(exc, json.JSONDecodeError):
        message, line, column = exc.msg, exc.lineno, exc.colno
    elif isinstance(exc, yaml.MarkedYAMLError):
        message = f"{exc.problem} ({exc.context})" if exc.context else str(exc.problem)
        if exc.problem_mark is not None:
            line, column = exc.problem_mark.line + 1, exc.problem_mark.column + 1
    elif isinstance(exc, tomllib.TOMLDecodeError):
        match = _TOML_POSITION.match(message)
        if match is not None:
            message = match["message"]
            line, column = int(match["line"]), int(match["column"])
    path = _DOCUMENT if line is None else f"line {line}, column {column}"
    return PolicyProblem(
        path=path,
        message=f"{file_format.upper()} syntax error: {message}",
        source=source,
    )


def _load_json(text: str) -> object:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    return json.loads(text, object_pairs_hook=pairs)


class _YamlLoader(yaml.SafeLoader):
    """A safe loader with YAML 1.2 booleans that refuses duplicate keys.

    YAML 1.1 reads ``on``, ``off``, ``yes`` and ``no`` as booleans, which
    would turn the ``on`` key of a fallback into ``True``. Strictly private.
    """

    def construct_mapping(
        self, node: yaml.MappingNode, deep: bool = False
    ) -> dict[Any, Any]:
        keys: set[str] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                continue  # the parent refuses an unhashable key with its mark
            if key in keys:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _load_yaml(text: str) -> object:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - _YamlLoader is a SafeLoader


def _kind(value: object) -> str:
    """Name a value's type the way a policy author thinks of it."""
    kinds: tuple[tuple[type[Any], str], ...] = (
        (type(None), "null"),
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (dt.datetime, "a date-time"),
        (dt.date, "a date"),
        (dt.time, "a time"),
        (Mapping, "a table"),
        (list, "a list"),
        (tuple, "a list"),
    )
    for types, name in kinds:
        if isinstance(value, types):
            return name
    return type(value).__name__


class _Reader:
    """Checks a document's structure, collecting every located problem.

    Each method returns the settings it read, or ``None`` where a problem
    was recorded. Strictly private.
    """

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.problems: list[PolicyProblem] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(
            PolicyProblem(path=path, message=message, source=self.source)
        )

    def wrong_type(self, path: str, expected: str, value: object) -> None:
        hint = ""
        if isinstance(value, dt.date | dt.time):
            hint = " (quote it to make it a string)"
        self.problem(
            path or _DOCUMENT, f"expected {expected}, got {_kind(value)}{hint}"
        )

    # Containers.

    def table(
        self,
        value: object,
        path: str,
        *,
        required: frozenset[str] = frozenset(),
        allowed: frozenset[str],
    ) -> Mapping[str, Any] | None:
        """Check that ``value`` is a table with known keys and its required keys."""
        if not isinstance(value, Mapping):
            self.wrong_type(path, "a table", value)
            return None
        prefix = f"{path}." if path else ""
        for key in value:
            if not isinstance(key, str):
                self.problem(
                    path or _DOCUMENT, f"keys must be strings, got {_kind(key)} {key!r}"
                )
            elif key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem(
                    f"{prefix}{key}",
                    f"unknown key{hint}; known keys: {', '.join(sorted(allowed))}",
                )
        for key in sorted(required - set(value)):
            self.problem(f"{prefix}{key}", "missing required key")
        return value

    def items(self, value: object, path: str) -> list[tuple[str, object]] | None:
        """The elements of a list with their paths."""
        if not isinstance(value, list | tuple):
            self.wrong_type(path, "a list", value)
            return None
        return [(f"{path}[{index}]", item) for index, item in enumerate(value)]

    # Scalars.

    def string(self, value: object, path: str) -> str | None:
        if isinstance(value, str):
            return value
        self.wrong_type(path, "a string", value)
        return None

    def strings(self, value: object, path: str) -> tuple[str, ...] | None:
        items = self.items(value, path)
        if items is None:
            return None
        out = _all([self.string(item, item_path) for item_path, item in items])
        return None if out is None else tuple(out)

    def boolean(self, value: object, path: str) -> bool | None:
        if isinstance(value, bool):
            return value
        self.wrong_type(path, "true or false", value)
        return None

    def duration(self, value: object, path: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.wrong_type(path, "a duration such as '30s' or '5m'", value)
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(path, str(exc))
            return None

    def attempts(self, value: object, path: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(path, "an integer", value)
            return None
        if value < 1:
            self.problem(path, f"must be at least 1, got {value}")
            return None
        return value

    def integer(self, value: object, path: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(path, "an integer", value)
            return None
        return value

    def outcome(self, value: object, path: str) -> Outcome | None:
        return self.choice(value, path, Outcome, "an outcome")

    def status(self, value: object, path: str) -> ResultStatus | None:
        return self.choice(value, path, ResultStatus, "a result status")

    def choice(
        self, value: object, path: str, choices: type[_E], what: str
    ) -> _E | None:
        text = self.string(value, path)
        if text is None:
            return None
        try:
            return choices(text)
        except ValueError:
            names = ", ".join(sorted(member.value for member in choices))
            self.problem(path, f"{text!r} is not {what} (one of {names})")
            return None

    # The document.

    def optional(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        read: Callable[[object, str], _T | None],
        settings: dict[str, Any],
    ) -> bool:
        """Read ``data[key]`` into ``settings`` when given (null is "not given").

        Returns whether the value was absent or sound.
        """
        value = data.get(key)
        if value is None:
            return True
        prefix = f"{path}." if path else ""
        result = read(value, f"{prefix}{key}")
        if result is None:
            return False
        settings[key] = result
        return True

    def policy(self, data: object) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        table = self.table(
            data,
            "",
            required=frozenset({"name", "version", "steps"}),
            allowed=_POLICY_KEYS,
        )
        if table is None:
            return settings
        for key in ("name", "version"):
            if key in table:
                result = self.string(table[key], key)
                if result is not None:
                    settings[key] = result
        self.optional(table, "deadline", "", self.duration, settings)
        self.optional(table, "on_deadline", "", self.outcome, settings)
        self.optional(table, "default", "", self.outcome, settings)
        self.optional(table, "score", "", self.string, settings)
        if "steps" in table:
            steps = self.sequence(table["steps"], "steps", self.step)
            if steps is not None:
                settings["steps"] = steps
        self.optional(
            table,
            "rules",
            "",
            lambda value, path: self.sequence(value, path, self.rule),
            settings,
        )
        self.optional(table, "scripts", "", self.scripts, settings)
        self.optional(table, "review", "", self.review, settings)
        return settings

    def review(self, value: object, path: str) -> ReviewSettings | None:
        """The ``[review]`` table; its evidence steps read like any step."""
        table = self.table(value, path, allowed=_REVIEW_KEYS)
        if table is None:
            return None
        settings: dict[str, Any] = {}
        readers: tuple[tuple[str, Callable[[object, str], object]], ...] = (
            ("priority", self.integer),
            ("sla", self.duration),
            ("escalate_by", self.integer),
            ("fallback_after", self.duration),
            ("fallback", self.outcome),
            ("lease", self.duration),
            ("approve_reasons", self.strings),
            ("reject_reasons", self.strings),
            ("evidence", lambda item, at: self.sequence(item, at, self.step)),
        )
        ok = True
        for key, read in readers:
            ok = self.optional(table, key, path, read, settings) and ok
        return ReviewSettings(**settings) if ok else None

    def scripts(self, value: object, path: str) -> dict[str, Any] | None:
        """Named call scripts: a table of tables (their insides are the channel's to check)."""
        table = self.options(value, path)
        if table is None:
            return None
        ok = True
        for name, body in table.items():
            if not isinstance(body, Mapping):
                self.wrong_type(f"{path}.{name}", "a table", body)
                ok = False
        return table if ok else None

    def sequence(
        self, value: object, path: str, read: Callable[[object, str], _T | None]
    ) -> list[_T] | None:
        items = self.items(value, path)
        if items is None:
            return None
        return _all([read(item, item_path) for item_path, item in items])

    def step(self, value: object, path: str) -> Step | None:
        table = self.table(
            value, path, required=frozenset({"id", "channel"}), allowed=_STEP_KEYS
        )
        if table is None:
            return None
        settings: dict[str, Any] = {}
        ok = True
        for key in ("id", "channel"):
            if key in table:
                result = self.string(table[key], f"{path}.{key}")
                ok = result is not None and ok
                settings[key] = result
            else:
                ok = False
        readers: tuple[tuple[str, Callable[[object, str], object]], ...] = (
            ("timeout", self.duration),
            ("retry", self.retry),
            ("providers", self.strings),
            ("after", self.strings),
            ("when", self.string),
            ("fallback", self.fallback),
            ("optional", self.boolean),
            ("options", self.options),
            ("price", self.price),
        )
        for key, read in readers:
            ok = self.optional(table, key, path, read, settings) and ok
        return Step(**settings) if ok else None

    def price(self, value: object, path: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong_type(path, "a number", value)
            return None
        if not math.isfinite(value) or value < 0:
            self.problem(path, f"must be a number of at least 0, got {value}")
            return None
        return float(value)

    def retry(self, value: object, path: str) -> RetrySettings | None:
        table = self.table(value, path, allowed=_RETRY_KEYS)
        if table is None:
            return None
        settings: dict[str, Any] = {}
        ok = self.optional(table, "attempts", path, self.attempts, settings)
        for key in ("timeout", "wait_initial", "wait_max", "wait_jitter"):
            ok = self.optional(table, key, path, self.duration, settings) and ok
        return RetrySettings(**settings) if ok else None

    def fallback(self, value: object, path: str) -> Fallback | None:
        table = self.table(
            value, path, required=frozenset({"step"}), allowed=_FALLBACK_KEYS
        )
        if table is None:
            return None
        settings: dict[str, Any] = {}
        ok = "step" in table
        if ok:
            step = self.string(table["step"], f"{path}.step")
            ok = step is not None
            settings["step"] = step
        ok = self.optional(table, "on", path, self.statuses, settings) and ok
        return Fallback(**settings) if ok else None

    def statuses(self, value: object, path: str) -> list[ResultStatus] | None:
        return self.sequence(value, path, self.status)

    def options(self, value: object, path: str) -> dict[str, Any] | None:
        if not isinstance(value, Mapping):
            self.wrong_type(path, "a table", value)
            return None
        bad = [key for key in value if not isinstance(key, str)]
        for key in bad:
            self.problem(path, f"keys must be strings, got {_kind(key)} {key!r}")
        return None if bad else dict(value)

    def rule(self, value: object, path: str) -> Rule | None:
        table = self.table(
            value,
            path,
            required=frozenset({"outcome", "when", "reason"}),
            allowed=_RULE_KEYS,
        )
        if table is None:
            return None
        settings: dict[str, Any] = {}
        ok = True
        readers: tuple[tuple[str, Callable[[object, str], object]], ...] = (
            ("outcome", self.outcome),
            ("when", self.string),
            ("reason", self.string),
        )
        for key, read in readers:
            if key in table:
                result = read(table[key], f"{path}.{key}")
                ok = result is not None and ok
                settings[key] = result
            else:
                ok = False
        ok = self.optional(table, "message", path, self.string, settings) and ok
        return Rule(**settings) if ok else None


def _all(values: list[_T | None]) -> list[_T] | None:
    """The values when none is missing, else ``None``."""
    out = [value for value in values if value is not None]
    return out if len(out) == len(values) else None

"""CEL conditions: compiled once, analysed for references, evaluated safely."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
from typing import TYPE_CHECKING, Any, cast

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import ModuleType

    import cel

__all__ = ["Condition", "ConditionError", "compile_condition", "make_context"]

ROOTS = frozenset({"applicant", "application", "steps"})
_STRING = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")
_CHAIN = re.compile(r"\b(steps|applicant|application)((?:\s*\.\s*[A-Za-z_]\w*)+)")
_MACRO_VAR = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,"
)
_STATUS_CMP = re.compile(
    r"""steps\s*\.\s*(\w+)\s*\.\s*status\s*(?:==|!=)\s*(['"])(\w*)\2"""
    r"""|(['"])(\w*)\4\s*(?:==|!=)\s*steps\s*\.\s*(\w+)\s*\.\s*status"""
)
_SIGNAL_IN = re.compile(r"""(['"])(\w+)\1\s+in\s+steps\s*\.\s*(\w+)\s*\.\s*signals""")


def _load_engine() -> ModuleType:
    """The CEL engine: the native extension ``cel.cel``, without the rest of its package.

    ``import cel`` also imports the package's command-line tool, and through
    it typer, rich, prompt_toolkit, asyncio, sockets and subprocesses: some 440
    modules and a fifth of a second that the pure core has no use for, and
    imports that do I/O. The extension is loaded on its own and registered
    under its name, so a later ``import cel`` reuses it (a native extension is
    initialised once per process).
    """
    loaded = sys.modules.get("cel.cel")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("cel")  # finds the package, runs nothing
    locations = package.submodule_search_locations if package is not None else None
    spec = importlib.machinery.PathFinder.find_spec("cel.cel", locations)
    if spec is None or spec.loader is None:  # pragma: no cover - a broken install
        raise ImportError("the CEL engine (common-expression-language) is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules["cel.cel"] = module
    spec.loader.exec_module(module)
    return module


_ENGINE = _load_engine()


class ConditionError(ValueError):
    """A condition did not compile or could not be evaluated."""


@attrs.frozen(kw_only=True)
class Condition:
    """A compiled CEL boolean expression."""

    source: str
    program: Any = attrs.field(repr=False, eq=False)
    variables: frozenset[str]
    chains: tuple[tuple[str, ...], ...]
    _steps: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    whole: frozenset[str] = frozenset()
    """Roots read as a whole (``size(steps)``), not only through fields."""
    """Dotted paths the expression reads, such as ``("steps", "bureau", "signals")``."""
    status_literals: tuple[tuple[str, str], ...]
    """``(step, status)`` pairs compared with ``steps.X.status``."""
    signal_literals: tuple[tuple[str, str], ...]
    """``(step, signal)`` pairs tested with ``'signal' in steps.X.signals``."""

    @property
    def steps(self) -> frozenset[str]:
        """The step ids the expression reads."""
        return self._steps

    @property
    def constant(self) -> bool:
        """Whether the expression reads no variable at all."""
        return not self.variables

    def __attrs_post_init__(self) -> None:
        steps = frozenset(
            chain[1] for chain in self.chains if chain[0] == "steps" and len(chain) > 1
        )
        object.__setattr__(self, "_steps", steps)

    def _execute(self, context: Mapping[str, Any] | cel.Context) -> Any:
        try:
            return self.program.execute(_prepared(context))
        except Exception as exc:  # noqa: BLE001 - the CEL binding raises several builtin types
            raise ConditionError(f"{type(exc).__name__}: {exc}") from None

    def evaluate(self, context: Mapping[str, Any] | cel.Context) -> bool:
        """Evaluate to a boolean.

        Raises:
            ConditionError: evaluation failed or did not yield a boolean.
        """
        value = self._execute(context)
        if not isinstance(value, bool):
            raise ConditionError(f"expected a boolean, got {type(value).__name__}")
        return value

    def evaluate_number(self, context: Mapping[str, Any] | cel.Context) -> float:
        """Evaluate to a number (for score expressions).

        Raises:
            ConditionError: evaluation failed or did not yield a number.
        """
        value = self._execute(context)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConditionError(f"expected a number, got {type(value).__name__}")
        return float(value)


def _prepared(context: Mapping[str, Any] | cel.Context) -> dict[str, Any] | cel.Context:
    if isinstance(context, _ENGINE.Context):
        return cast("cel.Context", context)
    return dict(cast("Mapping[str, Any]", context))


def make_context(variables: Mapping[str, Any]) -> cel.Context:
    """Convert variables once, for several conditions evaluated over them."""
    try:
        context: cel.Context = _ENGINE.Context(dict(variables))
    except Exception as exc:  # noqa: BLE001 - the binding raises several builtin types
        raise ConditionError(f"{type(exc).__name__}: {exc}") from None
    return context


def compile_condition(source: str) -> Condition:
    """Compile a CEL expression and collect what it references.

    Raises:
        ConditionError: the expression does not parse; the message keeps the
            parser's column marker.
    """
    if not source.strip():
        raise ConditionError("empty expression")
    try:
        program = _ENGINE.compile(source)
    except Exception as exc:  # noqa: BLE001 - the binding raises ValueError, sometimes others
        text = str(exc)
        marker = text.find("ERROR: ")
        raise ConditionError(text[marker + 7 :] if marker >= 0 else text) from None
    bare = _STRING.sub("''", source)
    bound = set(_MACRO_VAR.findall(bare))
    variables = frozenset(program.variables()) - bound
    chains = tuple(
        (match.group(1), *(part.strip() for part in match.group(2).split(".")[1:]))
        for match in _CHAIN.finditer(bare)
    )
    chained = dict.fromkeys(ROOTS, 0)
    for chain in chains:
        chained[chain[0]] += 1
    whole = frozenset(
        root for root in ROOTS if len(re.findall(rf"\b{root}\b", bare)) > chained[root]
    )
    statuses = []
    for match in _STATUS_CMP.finditer(source):
        if match.group(1) is not None:
            statuses.append((match.group(1), match.group(3)))
        else:
            statuses.append((match.group(6), match.group(5)))
    signals = tuple((m.group(3), m.group(2)) for m in _SIGNAL_IN.finditer(source))
    return Condition(
        source=source,
        program=program,
        variables=variables,
        chains=chains,
        whole=whole,
        status_literals=tuple(statuses),
        signal_literals=signals,
    )

"""The public surface: every public module exports exactly its public names, sorted."""

from __future__ import annotations

import importlib
import inspect

import pytest

import multiverify


def _defined_under(defined_in: str, module: str) -> bool:
    return defined_in == module or defined_in.startswith(f"{module}._")


PUBLIC_MODULES = [
    "multiverify",
    "multiverify.asgi",
    "multiverify.channels",
    "multiverify.backtest",
    "multiverify.compliance",
    "multiverify.exceptions",
    "multiverify.policy",
    "multiverify.providers",
    "multiverify.sandbox",
    "multiverify.stores",
    "multiverify.temporal",
    "multiverify.testing",
    "multiverify.webhooks",
]


def _export_order(name: str) -> tuple[int, str]:
    if name.isupper():
        return (0, name)
    return (1, name) if name[:1].isupper() else (2, name)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
class TestExports:
    def test_all_is_sorted(self, name: str) -> None:
        """``__all__`` is sorted, so additions are easy to review.

        The order is ruff's (RUF022): constants, then classes, then the rest,
        each alphabetical.
        """
        module = importlib.import_module(name)
        assert list(module.__all__) == sorted(module.__all__, key=_export_order)

    def test_all_names_exist(self, name: str) -> None:
        """Every name in ``__all__`` can be imported."""
        module = importlib.import_module(name)
        for member in module.__all__:
            assert hasattr(module, member), member

    def test_public_classes_and_functions_are_exported(self, name: str) -> None:
        """Nothing public is defined or re-exported without being in ``__all__``."""
        module = importlib.import_module(name)
        public = {
            member
            for member, value in vars(module).items()
            if not member.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and _defined_under(getattr(value, "__module__", ""), name)
        }
        assert public <= set(module.__all__)


class TestVersion:
    def test_version_is_the_installed_one(self) -> None:
        """``__version__`` is read lazily from the installed metadata."""
        from importlib.metadata import version

        assert multiverify.__version__ == version("multiverify")

    def test_unknown_attribute(self) -> None:
        """Unknown attributes raise AttributeError naming them."""
        with pytest.raises(AttributeError, match="nope"):
            _ = multiverify.nope  # type: ignore[attr-defined]

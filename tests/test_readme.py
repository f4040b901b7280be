"""The README's quickstart runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


class TestReadme:
    def test_quickstart_runs(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The quickstart block runs offline and prints an approved verdict."""
        block = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
        assert block is not None
        exec(compile(block.group(1), str(README), "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
        out = capsys.readouterr().out
        assert "Code sent to +86*******8000" in out
        assert "Verdict: approved" in out
        assert "Reason all.confirmed" in out

    def test_two_setup_commands(self) -> None:
        """The README names exactly the two set-up commands CI and users run."""
        text = README.read_text()
        assert "bash scripts/demo" in text
        assert "bash scripts/test" in text
        ci = (README.parent / ".ci" / "run").read_text()
        assert "bash scripts/test" in ci

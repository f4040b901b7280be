"""The README's quickstart runs as written."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def setup_commands() -> list[str]:
    """The commands of the README's "Set up" block, comments dropped."""
    section = README.read_text().split("## Set up", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None
    return [
        line.split("#", 1)[0].strip()
        for line in block.group(1).splitlines()
        if line.split("#", 1)[0].strip()
    ]


def script_lines(path: Path) -> list[str]:
    """A shell script's commands, comments and blank lines dropped."""
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


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
        assert setup_commands() == ["bash scripts/demo", "bash scripts/test"]

    def test_ci_runs_the_readme_test_command_verbatim(self) -> None:
        """``.ci/run`` ends by running the README's test command, as written."""
        assert script_lines(ROOT / ".ci" / "run")[-1] == setup_commands()[1]

    @pytest.mark.parametrize("script", ["demo", "test"])
    def test_each_command_creates_or_reuses_the_venv(self, script: str) -> None:
        """Both scripts set up ``.venv`` (created only when missing) before anything."""
        lines = script_lines(ROOT / "scripts" / script)
        assert lines[0] == 'source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"'
        venv = (ROOT / "scripts" / "_venv.sh").read_text()
        assert "if [ ! -x .venv/bin/python ]; then" in venv
        assert '"$PYTHON" -m venv .venv' in venv

    def test_the_demo_command_runs_the_demo(self) -> None:
        """``scripts/demo`` installs the cli extra and passes its arguments on."""
        lines = script_lines(ROOT / "scripts" / "demo")
        assert any('-e ".[cli]"' in line for line in lines)
        assert lines[-1] == 'exec .venv/bin/multiverify demo "$@"'

    def test_the_test_command_runs_every_gate(self) -> None:
        """``scripts/test`` runs each gate the README promises and fails if one fails."""
        text = (ROOT / "scripts" / "test").read_text()
        for gate in (
            ".venv/bin/ruff check src tests examples benchmarks",
            ".venv/bin/ruff format --check src tests examples benchmarks",
            ".venv/bin/mypy --strict src",
            ".venv/bin/coverage run -m pytest",
            ".venv/bin/coverage report",
            "for example in examples/*.py; do",
            ".venv/bin/mkdocs build --strict",
        ):
            assert gate in text, gate
        assert "exit 1" in text
        coverage = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
            "coverage"
        ]
        assert coverage["run"]["branch"] is True
        assert coverage["report"]["fail_under"] >= 90


QUICKSTART = ROOT / "docs" / "quickstart.md"


class TestDocsQuickstart:
    def test_the_quickstart_page_runs_and_prints_what_it_shows(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The page's code, run in order (the policy loaded from its TOML), prints
        exactly the output the page shows."""
        text = QUICKSTART.read_text()
        toml = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
        assert toml is not None
        (tmp_path / "consumer-loan.toml").write_text(toml.group(1))
        monkeypatch.chdir(tmp_path)
        page = text.split("## 5.", 1)[0]  # section 5 is a fragment (``...``)
        namespace: dict[str, object] = {"__name__": "quickstart"}
        for block in re.findall(r"```python\n(.*?)```", page, re.DOTALL):
            exec(compile(block, str(QUICKSTART), "exec"), namespace)  # noqa: S102 - our own docs
        shown = re.search(r"It prints:\n\n```text\n(.*?)```", text, re.DOTALL)
        assert shown is not None
        assert capsys.readouterr().out == shown.group(1)

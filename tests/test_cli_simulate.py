"""Tests for ``multiverify simulate`` and the HTML report."""

from __future__ import annotations

import errno
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from multiverify._cli import create_cli
from multiverify.backtest import load_labels, render_html, simulate_file
from multiverify.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "backtest"


def parse_page(page: str) -> ET.Element:
    """The page below its doctype, parsed as XML (it is our own output)."""
    return ET.fromstring(page.split("\n", 1)[1])  # noqa: S314 - our own markup


@pytest.fixture
def cli() -> click.Group:
    return create_cli()


def invoke(cli: click.Group, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def demo_args(*extra: str) -> list[str]:
    return [
        "simulate",
        "--policy",
        str(DATA / "proposed.toml"),
        "--baseline",
        str(DATA / "current.toml"),
        "--sessions",
        str(DATA / "sessions.jsonl"),
        "--labels",
        str(DATA / "labels.csv"),
        *extra,
    ]


class TestSimulateCommand:
    def test_json_is_the_report(self, cli: click.Group) -> None:
        """``--json`` prints exactly the library's report."""
        result = invoke(cli, *demo_args("--json", "--review-minutes", "12"))
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        expected = simulate_file(
            load_policy(DATA / "proposed.toml"),
            DATA / "sessions.jsonl",
            baseline=load_policy(DATA / "current.toml"),
            labels=load_labels(DATA / "labels.csv"),
            review_minutes=12,
        ).to_json()
        assert data == json.loads(json.dumps(expected))
        assert data["sessions"] == 1000
        assert sum(data["policy"]["outcomes"].values()) == 1000

    def test_terminal_report(self, cli: click.Group, tmp_path: Path) -> None:
        """The terminal report shows every section; --html writes the page too."""
        page = tmp_path / "report.html"
        result = invoke(cli, *demo_args("--html", str(page), "--changes", "2"))
        assert result.exit_code == 0, result.output
        out = result.stdout
        data = json.loads(invoke(cli, *demo_args("--json")).stdout)
        for heading in (
            "Outcomes",
            f"Changed verdicts: {data['changed']} of 1000",
            "Against labels (baseline)",
            "Against labels (policy)",
            "Vendor cost and manual review",
            f"Missing evidence: {data['policy']['missing_evidence']['sessions']} sessions",
            f"{data['changed'] - 2} more changed sessions",
            f"HTML report: {page}",
        ):
            assert heading in out, heading
        first = data["changes"][0]
        assert f"{first['session_id']}: approved" in out
        assert out.count("Verdict: ") >= 2  # both explanations of a change
        assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    def test_without_baseline(self, cli: click.Group) -> None:
        """Without a baseline there is no change table."""
        result = invoke(
            cli,
            "simulate",
            "--policy",
            str(DATA / "current.toml"),
            "--sessions",
            str(DATA / "sessions.jsonl"),
        )
        assert result.exit_code == 0, result.output
        assert "Changed verdicts" not in result.stdout
        assert "Missing evidence: none" in result.stdout

    def test_broken_policy_is_located(self, cli: click.Group, tmp_path: Path) -> None:
        """A broken policy file prints each problem with its place and exits 1."""
        broken = tmp_path / "new.toml"
        broken.write_text(
            (DATA / "proposed.toml")
            .read_text()
            .replace("price = 0.05", "price = -1")
            .replace('timeout = "10s"', 'timeout = "ten"', 1)
        )
        result = invoke(
            cli,
            "simulate",
            "--policy",
            str(broken),
            "--sessions",
            str(DATA / "sessions.jsonl"),
        )
        assert result.exit_code == 1
        assert (
            f"{broken}: steps[1].price: must be a number of at least 0, got -1"
            in result.stderr
        )
        assert f"{broken}: steps[0].timeout: not a duration: 'ten'" in result.stderr

    def test_broken_sessions_name_the_line(
        self, cli: click.Group, tmp_path: Path
    ) -> None:
        """A bad JSONL line is reported with its number."""
        sessions = tmp_path / "s.jsonl"
        lines = (DATA / "sessions.jsonl").read_text().splitlines()[:3]
        sessions.write_text("\n".join([*lines, "{oops"]) + "\n")
        result = invoke(
            cli,
            "simulate",
            "--policy",
            str(DATA / "current.toml"),
            "--sessions",
            str(sessions),
        )
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: {sessions}: line 4: not JSON: ")

    def test_broken_labels_name_the_line(
        self, cli: click.Group, tmp_path: Path
    ) -> None:
        """A bad CSV row is reported with its number."""
        labels = tmp_path / "labels.csv"
        labels.write_text("session_id,label\ns-000001,good\ns-000002\n")
        result = invoke(
            cli,
            "simulate",
            "--policy",
            str(DATA / "current.toml"),
            "--sessions",
            str(DATA / "sessions.jsonl"),
            "--labels",
            str(labels),
            "--json",
        )
        assert result.exit_code == 1
        assert result.stderr == (
            f"error: {labels}: line 3: expected 2 fields (session_id,label), got 1\n"
        )

    def test_missing_file(self, cli: click.Group) -> None:
        """A sessions file that does not exist is a usage error."""
        result = invoke(
            cli,
            "simulate",
            "--policy",
            str(DATA / "current.toml"),
            "--sessions",
            "nope.jsonl",
        )
        assert result.exit_code == 2
        assert "does not exist" in result.stderr

    def test_html_in_a_missing_directory(
        self, cli: click.Group, tmp_path: Path
    ) -> None:
        """An --html path in no directory is a usage error before any replay."""
        page = tmp_path / "nowhere" / "report.html"
        result = invoke(cli, *demo_args("--json", "--html", str(page)))
        assert result.exit_code == 2
        assert f"no directory {page.parent} to write the report in" in result.stderr
        assert "Traceback" not in result.output

    def test_html_that_cannot_be_written(
        self, cli: click.Group, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A report the system refuses to write is one line and exit 1."""

        def refuse(self: Path, *args: object, **kwargs: object) -> int:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))

        monkeypatch.setattr(Path, "write_text", refuse)
        page = tmp_path / "report.html"
        result = invoke(cli, *demo_args("--json", "--html", str(page)))
        assert result.exit_code == 1
        assert result.stderr == f"error: cannot write {page}: Permission denied\n"


class TestHtml:
    def test_self_contained_and_well_formed(self) -> None:
        """The page parses as XML, draws SVG charts and fetches nothing."""
        report = simulate_file(
            load_policy(DATA / "proposed.toml"),
            DATA / "sessions.jsonl",
            baseline=load_policy(DATA / "current.toml"),
            labels=load_labels(DATA / "labels.csv"),
            review_minutes=10,
        )
        page = render_html(report, limit=3)
        assert page.startswith("<!DOCTYPE html>\n")
        root = parse_page(page)
        assert root.tag == "html"
        svg = "{http://www.w3.org/2000/svg}svg"
        assert len(root.findall(f".//{svg}")) == 4  # outcomes, cost, missing steps
        # Nothing external: no scripts, links, images or remote URLs but the SVG namespace.
        for tag in ("script", "link", "img", "iframe", "object"):
            assert root.find(f".//{tag}") is None, tag
        urls = set(re.findall(r"https?://[^\"' )]+", page))
        assert urls == {"http://www.w3.org/2000/svg"}
        assert "url(" not in page
        assert len(root.findall(".//details")) == 3
        assert f"{len(report.changes) - 3} more in the JSON report" in page
        text = "".join(root.itertext())
        assert "Changed verdicts: " in text
        assert "good" in text
        assert "reviewer hours" in text

    def test_text_is_escaped(self) -> None:
        """Names from the data cannot inject markup."""
        from multiverify import ChannelResult
        from multiverify.backtest import RecordedSession, RecordedStep, simulate

        policy = load_policy(DATA / "current.toml")
        recorded = RecordedSession(
            session_id="<b>x</b>&",
            steps={
                "sms": RecordedStep(
                    step_id="sms",
                    channel="sms_code",
                    result=ChannelResult(status="passed"),
                )
            },
        )
        report = simulate(
            policy,
            [recorded],
            baseline=load_policy(DATA / "proposed.toml"),
            labels={"<b>x</b>&": "g<o>od"},
        )
        page = render_html(report)
        parse_page(page)
        assert "<b>x</b>" not in page
        assert "&lt;b&gt;x&lt;/b&gt;&amp;" in page

    def test_without_baseline_labels_or_missing(self) -> None:
        """A plain report still renders; sections without data say so or are left out."""
        report = simulate_file(
            load_policy(DATA / "current.toml"), DATA / "sessions.jsonl"
        )
        page = render_html(report)
        root = parse_page(page)
        text = "".join(root.itertext())
        assert "Changed verdicts" not in text
        assert "Against labels" not in text
        assert "Every step the policy needed was in the recording." not in text
        assert "lacked a step the verdict did not need" in text

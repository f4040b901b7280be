"""Tests for the ``multiverify`` command: the demo, policy checks and audit tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from multiverify._cli import create_cli, main, verdict_json
from multiverify.sandbox import DEFAULT_POLICY_PATH, load_default_policy

BROKEN_POLICY = """\
name = "broken"
version = "1"

[[steps]]
id = "bureau"
channel = "credit_bureau"
timeout = "ten seconds"

[[steps]]
id = "call"
chanel = "phone_call"

[[rules]]
outcome = "maybe"
when = "true"
reason = "x"
"""


@pytest.fixture
def cli() -> click.Group:
    return create_cli()


def invoke(cli: click.Group, *args: str) -> Result:
    """Run the command with zero demo delays."""
    return CliRunner().invoke(cli, list(args), env={"MULTIVERIFY_DEMO_SPEED": "0"})


def demo_json(cli: click.Group, persona: str, *extra: str) -> dict[str, Any]:
    result = invoke(cli, "demo", "--persona", persona, "--json", *extra)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def steps_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step_id"]: step for step in data["steps"]}


class TestDemoJson:
    def test_honest_is_approved(self, cli: click.Group) -> None:
        """The honest persona is approved; the JSON names policy, reasons and steps."""
        data = demo_json(cli, "honest")
        assert data["outcome"] == "approved"
        assert data["reasons"] == [
            {"code": "all.confirmed", "message": "identity, phone and intent confirmed"}
        ]
        policy = load_default_policy()
        assert data["policy"] == {
            "name": "consumer-loan-demo",
            "version": policy.version,
            "hash": policy.hash,
        }
        assert isinstance(data["score"], float)
        steps = steps_of(data)
        assert steps["bureau"] == {
            "step_id": "bureau",
            "channel": "credit_bureau",
            "state": "done",
            "status": "passed",
            "signals": ["identity_match"],
            # The sandbox bureau's clean file: 712 on the gateway's 300-950 scale.
            "score": pytest.approx((712 - 300) / 650),
        }
        assert steps["call"]["signals"] == [
            "identity_confirmed",
            "intent_confirmed",
            "details_completed",
        ]
        assert steps["sms"]["status"] == "passed"
        assert steps["video"]["status"] is None

    def test_fraudster_is_rejected(self, cli: click.Group) -> None:
        """The fraudster is rejected at once for the bureau's fraud alert."""
        data = demo_json(cli, "fraudster")
        assert data["outcome"] == "rejected"
        assert [r["code"] for r in data["reasons"]] == ["bureau.fraud_alert"]
        steps = steps_of(data)
        assert "fraud_alert" in steps["bureau"]["signals"]
        assert steps["call"]["state"] == "skipped"

    def test_hesitant_goes_to_review(self, cli: click.Group) -> None:
        """The hesitant persona is sent to review for the call's risk signals."""
        data = demo_json(cli, "hesitant")
        assert data["outcome"] == "review"
        assert [r["code"] for r in data["reasons"]] == ["call.risk_signals"]
        # At full speed the slow answers add "hesitant"; the evasion shows at any speed.
        assert {"evasive_answer", "detail_mismatch"} <= set(
            steps_of(data)["call"]["signals"]
        )

    def test_no_answer_is_approved_by_video(self, cli: click.Group) -> None:
        """The unanswered call fails, the video fallback passes: approved."""
        data = demo_json(cli, "no-answer")
        assert data["outcome"] == "approved"
        steps = steps_of(data)
        assert steps["call"]["status"] == "failed"
        assert steps["call"]["signals"] == ["no_answer", "no_contact"]
        assert steps["video"]["status"] == "passed"

    def test_speed_option(self, cli: click.Group) -> None:
        """The hidden ``--speed`` option works like the environment variable."""
        result = CliRunner().invoke(
            cli, ["demo", "--json", "--speed", "0", "--persona", "fraudster"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["outcome"] == "rejected"

    def test_speed_is_hidden(self, cli: click.Group) -> None:
        """``--help`` lists the demo's options but not ``--speed``."""
        result = invoke(cli, "demo", "--help")
        assert "--persona" in result.output
        assert "--speed" not in result.output

    def test_policy_file(self, cli: click.Group, tmp_path: Path) -> None:
        """``--policy`` runs another policy file."""
        text = DEFAULT_POLICY_PATH.read_text().replace(
            'name = "consumer-loan-demo"', 'name = "my-policy"'
        )
        path = tmp_path / "mine.toml"
        path.write_text(text)
        data = demo_json(cli, "honest", "--policy", str(path))
        assert data["policy"]["name"] == "my-policy"

    def test_broken_policy_file(self, cli: click.Group, tmp_path: Path) -> None:
        """A broken ``--policy`` prints its problems and exits 1."""
        path = tmp_path / "broken.toml"
        path.write_text(BROKEN_POLICY)
        result = invoke(cli, "demo", "--json", "--policy", str(path))
        assert result.exit_code == 1
        assert f"{path}: steps[0].timeout:" in result.stderr
        assert result.stdout == ""

    def test_policy_with_a_channel_the_sandbox_lacks(
        self, cli: click.Group, tmp_path: Path
    ) -> None:
        """A policy naming a channel the sandbox does not simulate fails with exit 1."""
        path = tmp_path / "custom.json"
        path.write_text(
            json.dumps(
                {
                    "name": "custom",
                    "version": "1",
                    "steps": [{"id": "face", "channel": "selfie"}],
                }
            )
        )
        result = invoke(cli, "demo", "--json", "--policy", str(path))
        assert result.exit_code == 1
        assert "selfie" in result.stderr

    def test_a_channel_without_a_simulation(
        self, cli: click.Group, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A policy channel the sandbox cannot simulate is reported, exit 1."""
        import multiverify._cli as module
        from multiverify.sandbox import simulated_channels

        monkeypatch.setattr(
            module,
            "simulated_channels",
            lambda persona, speed: simulated_channels(persona, speed=speed)[:3],
        )
        result = invoke(cli, "demo", "--json")
        assert result.exit_code == 1
        assert "video_sign" in result.stderr
        assert result.stdout == ""


class TestDemoScreen:
    def test_progress_and_verdict(self, cli: click.Group) -> None:
        """Without --json the demo draws the step table and the verdict panel."""
        result = invoke(cli, "demo", "--persona", "no-answer")
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "persona no-answer" in out
        assert "(simulated)" not in out
        # The real bureau, phone, SMS and video channels, each on its sandbox vendor.
        assert out.count("(sandbox") - out.count("(sandbox-bureau") == 4
        for step in ("bureau", "sms", "call", "video"):
            assert step in out
        assert "Verdict" in out
        assert "APPROVED" in out
        assert "Reason all.confirmed" in out  # the explanation
        assert "audit export" not in out  # only with --db

    def test_db_keeps_the_session(self, cli: click.Group, tmp_path: Path) -> None:
        """With --db the session stays in the file and the export command is shown."""
        db = tmp_path / "demo.db"
        result = invoke(cli, "demo", "--persona", "fraudster", "--db", str(db))
        assert result.exit_code == 0, result.output
        assert db.exists()
        assert "REJECTED" in result.stdout
        assert "multiverify audit export" in result.stdout


class TestPolicyCommands:
    def test_check_ok(self, cli: click.Group) -> None:
        """A valid file: OK with its name, version and hash."""
        result = invoke(cli, "policy", "check", str(DEFAULT_POLICY_PATH))
        assert result.exit_code == 0
        policy = load_default_policy()
        assert result.stdout.startswith("OK: ")
        assert f"policy consumer-loan-demo, version {policy.version}" in result.stdout
        assert policy.hash in result.stdout

    def test_check_broken(self, cli: click.Group, tmp_path: Path) -> None:
        """A broken file: every located problem as FILE: path: message, exit 1."""
        path = tmp_path / "broken.toml"
        path.write_text(BROKEN_POLICY)
        result = invoke(cli, "policy", "check", str(path))
        assert result.exit_code == 1
        lines = result.stdout.splitlines()
        assert len(lines) >= 3
        assert all(line.startswith(f"{path}: ") for line in lines)
        located = {line.split(": ")[1] for line in lines}
        assert {"steps[0].timeout", "steps[1].chanel", "rules[0].outcome"} <= located

    def test_check_unparsable(self, cli: click.Group, tmp_path: Path) -> None:
        """A file that does not parse is located too."""
        path = tmp_path / "bad.toml"
        path.write_text('name = "x\n')
        result = invoke(cli, "policy", "check", str(path))
        assert result.exit_code == 1
        assert result.stdout.startswith(f"{path}: ")

    def test_check_missing_file(self, cli: click.Group, tmp_path: Path) -> None:
        """A missing file is a usage error."""
        result = invoke(cli, "policy", "check", str(tmp_path / "none.toml"))
        assert result.exit_code == 2
        assert "does not exist" in result.stderr

    def test_explain(self, cli: click.Group) -> None:
        """``policy explain`` prints the policy in words."""
        result = invoke(cli, "policy", "explain", str(DEFAULT_POLICY_PATH))
        assert result.exit_code == 0
        assert result.stdout.startswith("Policy consumer-loan-demo, version ")
        assert "if it ends failed or timeout, video starts" in result.stdout
        assert "Deadline: 30m after the start" in result.stdout

    def test_explain_broken(self, cli: click.Group, tmp_path: Path) -> None:
        """Explaining a broken file prints its problems and exits 1."""
        path = tmp_path / "broken.toml"
        path.write_text(BROKEN_POLICY)
        result = invoke(cli, "policy", "explain", str(path))
        assert result.exit_code == 1
        assert f"{path}: steps[0].timeout:" in result.stdout


class TestAuditCommands:
    @pytest.fixture
    def db(self, cli: click.Group, tmp_path: Path) -> Path:
        """A store holding two demo sessions."""
        path = tmp_path / "demo.db"
        for persona in ("honest", "no-answer"):
            result = invoke(
                cli, "demo", "--json", "--persona", persona, "--db", str(path)
            )
            assert result.exit_code == 0, result.output
        return path

    def test_export_and_verify(
        self, cli: click.Group, db: Path, tmp_path: Path
    ) -> None:
        """The demo's trail exports as JSONL and verifies."""
        result = invoke(cli, "audit", "export", "--db", str(db))
        assert result.exit_code == 0
        trail = tmp_path / "trail.jsonl"
        trail.write_text(result.stdout)
        events = [json.loads(line) for line in result.stdout.splitlines()]
        assert len({e["session_id"] for e in events}) == 2
        verified = invoke(cli, "audit", "verify", str(trail))
        assert verified.exit_code == 0
        assert (
            verified.stdout == f"OK: {len(events)} audit events verified (2 sessions)\n"
        )

    def test_export_one_session(self, cli: click.Group, db: Path) -> None:
        """Naming a session exports only its events."""
        everything = invoke(cli, "audit", "export", "--db", str(db)).stdout.splitlines()
        first = json.loads(everything[0])["session_id"]
        result = invoke(cli, "audit", "export", "--db", str(db), first)
        assert result.exit_code == 0
        lines = result.stdout.splitlines()
        assert 0 < len(lines) < len(everything)
        assert {json.loads(line)["session_id"] for line in lines} == {first}

    def test_export_unknown_session(self, cli: click.Group, db: Path) -> None:
        """An unknown session id fails with exit 1."""
        result = invoke(cli, "audit", "export", "--db", str(db), "nope")
        assert result.exit_code == 1
        assert "has no session 'nope'" in result.stderr

    def test_export_empty_store(self, cli: click.Group, tmp_path: Path) -> None:
        """An empty store exports nothing and says so on stderr."""
        db = tmp_path / "empty.db"
        db.touch()
        result = invoke(cli, "audit", "export", "--db", str(db))
        assert result.exit_code == 0
        assert result.stdout == ""
        assert "no audit events" in result.stderr

    def test_tampered_trail(self, cli: click.Group, db: Path, tmp_path: Path) -> None:
        """A changed event fails verification, naming the event; exit 1."""
        lines = invoke(cli, "audit", "export", "--db", str(db)).stdout.splitlines()
        event = json.loads(lines[3])
        event["kind"] = "forged"
        lines[3] = json.dumps(event)
        trail = tmp_path / "tampered.jsonl"
        trail.write_text("\n".join(lines) + "\n")
        result = invoke(cli, "audit", "verify", str(trail))
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr.startswith(f"{trail}: event 3: audit event 3 ")
        assert "tampered" in result.stderr

    def test_dropped_event(self, cli: click.Group, db: Path, tmp_path: Path) -> None:
        """A dropped event breaks the chain at the next one."""
        lines = invoke(cli, "audit", "export", "--db", str(db)).stdout.splitlines()
        del lines[2]
        trail = tmp_path / "dropped.jsonl"
        trail.write_text("\n".join(lines) + "\n")
        result = invoke(cli, "audit", "verify", str(trail))
        assert result.exit_code == 1
        assert "event 2" in result.stderr

    def test_not_an_audit_file(self, cli: click.Group, tmp_path: Path) -> None:
        """A line that is not an audit event is reported with exit 1."""
        trail = tmp_path / "junk.jsonl"
        trail.write_text('{"hello": 1}\n')
        result = invoke(cli, "audit", "verify", str(trail))
        assert result.exit_code == 1
        assert "line 1 is not an audit event" in result.stderr

    def test_empty_file(self, cli: click.Group, tmp_path: Path) -> None:
        """An empty file verifies nothing: exit 1."""
        trail = tmp_path / "empty.jsonl"
        trail.write_text("")
        result = invoke(cli, "audit", "verify", str(trail))
        assert result.exit_code == 1
        assert "no audit events" in result.stderr


class TestMain:
    def test_main_runs_the_group(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``main`` is the console-script entry point."""
        with pytest.raises(SystemExit) as exc:
            main(["--version"])
        assert exc.value.code == 0
        assert "multiverify" in capsys.readouterr().out

    def test_without_the_cli_extra(self) -> None:
        """Without click and rich, ``main`` prints an install hint and exits 2."""
        # The CEL engine pulls in click and rich itself (through its own
        # command line), so load it first, then hide them from our module.
        code = (
            "import sys, multiverify.sandbox, multiverify.stores\n"
            "sys.modules['click'] = None; sys.modules['rich'] = None\n"
            "from multiverify._cli import main\n"
            "main()\n"
        )
        done = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert done.returncode == 2
        assert done.stdout == ""
        assert done.stderr == (
            "multiverify: the command line needs the 'cli' extra: "
            "pip install 'multiverify[cli]'\n"
        )

    def test_verdict_json_without_a_verdict(self) -> None:
        """A session that ended without a verdict (cancelled) has a null outcome."""
        from datetime import UTC, datetime

        from multiverify import PolicyRef, Session, SessionStatus

        session = Session(
            session_id="s1",
            applicant=None,
            policy=PolicyRef(name="p", version="1", hash="0" * 64),
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            status=SessionStatus.CANCELLED,
        )
        assert verdict_json(session) == {
            "session_id": "s1",
            "outcome": None,
            "status": "cancelled",
        }

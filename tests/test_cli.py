"""Tests for the ``multiverify`` command: the demo, policy checks and audit tools."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import phonenumbers
import pytest
from click.testing import CliRunner, Result

from multiverify import Applicant
from multiverify._cli import create_cli, main, verdict_json
from multiverify.sandbox import DEFAULT_POLICY_PATH, PERSONAS, load_default_policy
from multiverify.stores import SqliteStore

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

    def test_no_answer_explains_the_single_call(self, cli: click.Group) -> None:
        """The explanation counts the demo's one call in the singular."""
        result = invoke(cli, "demo", "--persona", "no-answer")
        text = " ".join(result.stdout.replace("│", " ").split())
        assert "(no contact after 1 call)" in text

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

    @pytest.mark.parametrize("keep", [False, True])
    def test_a_case_left_to_a_reviewer(
        self, cli: click.Group, tmp_path: Path, keep: bool
    ) -> None:
        """With a [review] table the demo ends at the queued case and says so."""
        policy = tmp_path / "reviewed.toml"
        policy.write_text(DEFAULT_POLICY_PATH.read_text() + '\n[review]\nsla = "1h"\n')
        db = tmp_path / "demo.db"
        extra = ("--db", str(db)) if keep else ()
        result = invoke(
            cli, "demo", "--persona", "hesitant", "--policy", str(policy), *extra
        )
        assert result.exit_code == 0, result.output
        out = " ".join(result.stdout.split())
        assert "REVIEW" in out
        assert "The case waits in the review queue for a person's decision" in out
        hint = f"multiverify review list --store {db}" if keep else "keep it with --db"
        assert hint in out

    def test_db_in_a_missing_directory(self, cli: click.Group, tmp_path: Path) -> None:
        """A --db in no directory is a usage error, not an sqlite3 traceback."""
        db = tmp_path / "nowhere" / "demo.db"
        result = invoke(cli, "demo", "--json", "--db", str(db))
        assert result.exit_code == 2
        assert f"no directory {db.parent} to keep the session in" in result.stderr
        assert not db.parent.exists()

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

    @pytest.mark.parametrize("command", ["check", "explain"])
    def test_a_missing_file_is_located(
        self, cli: click.Group, tmp_path: Path, command: str
    ) -> None:
        """A missing file is a located line and exit 1, like a file that cannot be read."""
        path = tmp_path / "none.toml"
        result = invoke(cli, "policy", command, str(path))
        assert result.exit_code == 1
        assert result.stdout == (
            f"{path}: (document): cannot read it: No such file or directory\n"
        )

    def test_check_a_directory(self, cli: click.Group, tmp_path: Path) -> None:
        """A directory is a usage error too."""
        (tmp_path / "policy.toml").mkdir()
        result = invoke(cli, "policy", "check", str(tmp_path / "policy.toml"))
        assert result.exit_code == 2
        assert "is a directory" in result.stderr

    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            (b'{"name": "caf\xe9"}', "not UTF-8 text: invalid continuation byte"),
            (b"[" * 100_000, "JSON syntax error: nested too deeply"),
        ],
    )
    @pytest.mark.parametrize("command", [("policy", "check"), ("demo", "--policy")])
    def test_unreadable_text(
        self,
        cli: click.Group,
        tmp_path: Path,
        body: bytes,
        problem: str,
        command: tuple[str, ...],
    ) -> None:
        """Text that is not UTF-8, or nested too deeply, is a located line and exit 1.

        ``policy check`` reports on stdout, the demo on stderr.
        """
        path = tmp_path / "policy.json"
        path.write_bytes(body)
        result = invoke(cli, *command, str(path))
        assert result.exit_code == 1
        output = result.stdout if command[0] == "policy" else result.stderr
        assert f"{path}: (document): {problem}\n" in output

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


CUSTOM_CHANNEL_POLICY = """\
name = "custom"
version = "1"

[[steps]]
id = "kyc"
channel = "in_house_kyc"

[[rules]]
outcome = "approved"
when = "steps.kyc.status == 'passed'"
reason = "kyc.passed"
"""


class TestPolicyWithAppChannels:
    @pytest.mark.parametrize("command", ["check", "explain"])
    def test_an_app_channel_is_unknown_unless_declared(
        self, cli: click.Group, tmp_path: Path, command: str
    ) -> None:
        """A policy naming a channel the app registers checks with ``--channel``."""
        path = tmp_path / "custom.toml"
        path.write_text(CUSTOM_CHANNEL_POLICY)
        undeclared = invoke(cli, "policy", command, str(path))
        assert undeclared.exit_code == 1
        assert "unknown channel 'in_house_kyc'" in undeclared.stdout
        declared = invoke(
            cli, "policy", command, str(path), "--channel", "in_house_kyc"
        )
        assert declared.exit_code == 0, declared.output
        assert declared.stdout.startswith("OK: " if command == "check" else "Policy ")

    def test_a_built_in_channel_keeps_its_signals(
        self, cli: click.Group, tmp_path: Path
    ) -> None:
        """Naming a built-in channel with ``--channel`` does not lift its signal check."""
        path = tmp_path / "bureau.toml"
        path.write_text(
            'name = "b"\nversion = "1"\n'
            '[[steps]]\nid = "bureau"\nchannel = "credit_bureau"\n'
            '[[rules]]\noutcome = "rejected"\n'
            'when = "\'fraud\' in steps.bureau.signals"\nreason = "fraud"\n'
        )
        result = invoke(cli, "policy", "check", str(path), "--channel", "credit_bureau")
        assert result.exit_code == 1
        assert "never emits signal 'fraud'" in result.stdout


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
        """A line that is not an audit event is reported with exit 1, in one line."""
        trail = tmp_path / "junk.jsonl"
        trail.write_text('{"hello": 1}\n')
        result = invoke(cli, "audit", "verify", str(trail))
        assert result.exit_code == 1
        assert result.stderr == (
            f"{trail}: event 0: line 1 is not an audit event: no data object\n"
        )

    def test_events_cut_off_the_end_are_found_against_the_store(
        self, cli: click.Group, db: Path, tmp_path: Path
    ) -> None:
        """Dropping a session's last events keeps the chain whole; ``--db`` finds it."""
        lines = invoke(cli, "audit", "export", "--db", str(db)).stdout.splitlines()
        first = json.loads(lines[0])["session_id"]
        kept = [line for line in lines if json.loads(line)["session_id"] == first]
        trail = tmp_path / "cut.jsonl"
        trail.write_text("\n".join(kept[:-2]) + "\n")
        assert invoke(cli, "audit", "verify", str(trail)).exit_code == 0
        result = invoke(cli, "audit", "verify", str(trail), "--db", str(db))
        assert result.exit_code == 1
        assert result.stderr.startswith(
            f"{trail}: event {len(kept) - 2}: the trail of session {first} stops at "
            f"#{len(kept) - 3} short of the session's last audit event"
        )

    def test_a_whole_trail_verifies_against_its_store(
        self, cli: click.Group, db: Path, tmp_path: Path
    ) -> None:
        """An untouched export reaches every session's head in the store."""
        trail = tmp_path / "trail.jsonl"
        trail.write_text(invoke(cli, "audit", "export", "--db", str(db)).stdout)
        result = invoke(cli, "audit", "verify", str(trail), "--db", str(db))
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("OK: ")

    def test_a_session_the_store_lacks(
        self, cli: click.Group, db: Path, tmp_path: Path
    ) -> None:
        """Against a store, a trail of a session it does not hold is refused."""
        trail = tmp_path / "trail.jsonl"
        trail.write_text(invoke(cli, "audit", "export", "--db", str(db)).stdout)
        other = tmp_path / "other.db"
        assert invoke(cli, "demo", "--json", "--db", str(other)).exit_code == 0
        result = invoke(cli, "audit", "verify", str(trail), "--db", str(other))
        assert result.exit_code == 1
        assert f"{other} has no session " in result.stderr

    def test_not_utf8(self, cli: click.Group, tmp_path: Path) -> None:
        """A file that is not UTF-8 text is one line and exit 1, not a traceback."""
        trail = tmp_path / "trail.jsonl"
        trail.write_bytes(b"\xff\xfe{}\n")
        result = invoke(cli, "audit", "verify", str(trail))
        assert result.exit_code == 1
        assert result.stderr == f"{trail}: not UTF-8 text: invalid start byte\n"

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


def _raw_personal_values(applicant: Applicant) -> set[str]:
    """Every personal value of ``applicant``, in the forms it could leak in."""
    born = applicant.date_of_birth
    values = {
        applicant.name,
        applicant.national_id,
        applicant.phone,
        applicant.phone.removeprefix("+"),
        str(phonenumbers.parse(applicant.phone).national_number),
        born.isoformat(),
        born.strftime("%Y%m%d"),
        born.strftime("%d/%m/%Y"),
    }
    if applicant.address is not None:
        values.update(applicant.address.lines)
        values.add(applicant.address.postal_code)
    for contact in applicant.contacts:
        values.update({contact.name, contact.phone, contact.phone.removeprefix("+")})
    return {value for value in values if value}


class TestPersonalDataNeverLeaks:
    @pytest.mark.parametrize("persona", sorted(PERSONAS))
    def test_a_whole_demo_session_shows_no_personal_value(
        self,
        cli: click.Group,
        persona: str,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Screen, JSON verdict, logs, audit trail and reprs hold no raw personal value.

        A whole demo session (both outputs, every log record at DEBUG, the
        exported audit trail, the saved session's and verdict's reprs and the
        explanation) is scanned for the applicant's national ID, phone (in
        E.164, without ``+`` and as a national number), name, date of birth
        and address.
        """
        caplog.set_level(logging.DEBUG)
        db = tmp_path / "demo.db"
        screen = invoke(cli, "demo", "--persona", persona, "--db", str(db))
        as_json = invoke(cli, "demo", "--persona", persona, "--json", "--db", str(db))
        exported = invoke(cli, "audit", "export", "--db", str(db))
        for result in (screen, as_json, exported):
            assert result.exit_code == 0, result.output

        async def saved() -> list[str]:
            async with SqliteStore(db) as store:
                texts = []
                for session_id in await store.session_ids():
                    session, _ = await store.load(session_id)
                    texts.append(repr(session))
                    if session.verdict is not None:
                        texts.append(session.verdict.explain())
                texts.extend(repr(event) for event in await store.audit_events())
                return texts

        haystack = "\n".join(
            [
                screen.output,
                as_json.output,
                exported.output,
                *(repr(record.__dict__) for record in caplog.records),
                caplog.text,
                *asyncio.run(saved()),
            ]
        )
        sessions = {
            json.loads(line)["session_id"] for line in exported.stdout.splitlines()
        }
        assert len(sessions) == 2  # both runs, whole, were scanned
        leaked = {
            value
            for value in _raw_personal_values(PERSONAS[persona].applicant)
            if value in haystack
        }
        assert leaked == set()


class TestNotAStore:
    @pytest.mark.parametrize(
        "args",
        [
            ("demo", "--json", "--db"),
            ("audit", "export", "--db"),
            ("review", "list", "--store"),
        ],
    )
    def test_a_db_that_is_no_database_is_a_one_line_error(
        self, cli: click.Group, tmp_path: Path, args: tuple[str, ...]
    ) -> None:
        """A --db that is not a SQLite file exits 1 with one line, no traceback."""
        path = tmp_path / "notes.db"
        path.write_text("not a database\n")
        result = invoke(cli, *args, str(path))
        assert result.exit_code == 1
        assert result.stderr == (
            f"Error: {path} is not a SQLite database, or is damaged "
            "(file is not a database)\n"
        )
        assert path.read_text() == "not a database\n"

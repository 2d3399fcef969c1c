"""The command line is put together from entry points: every documented command is there, and one broken
service costs only its own commands."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import typer
from typer.testing import CliRunner

from civicflow.cli import COMMANDS_GROUP, add_service_commands, app

runner = CliRunner()


def test_every_documented_command_answers_help() -> None:
    documented = [
        ["dev"], ["run"], ["migrate"], ["asyncapi"], ["submit"], ["track"], ["recategorise"],
        ["keys", "create"], ["keys", "list"], ["keys", "revoke"], ["replay", "query"],
        ["rules", "check"], ["rules", "dry-run"], ["rules", "reload"], ["rules", "explain"],
    ]  # fmt: skip
    for command in documented:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, f"civicflow {' '.join(command)}: {result.output}"


def test_a_contribution_that_cannot_load_is_reported_and_the_others_are_added() -> None:
    target = typer.Typer()
    target.command()(lambda: None)  # a kernel command, so the sub-app stays a group
    problems = add_service_commands(
        target,
        [
            EntryPoint("rules", "services.router.cli:rules_app", COMMANDS_GROUP),
            EntryPoint("broken", "services.no_such_module:app", COMMANDS_GROUP),
            EntryPoint("nowhere.thing", "services.router.cli:rules_app", COMMANDS_GROUP),
        ],
    )
    assert len(problems) == 2
    assert "services.no_such_module:app could not be loaded (ModuleNotFoundError" in problems[0]
    assert "'nowhere.thing'" in problems[1] and "names no command group; use one of replay" in problems[1]
    result = runner.invoke(target, ["rules", "check", "--help"])
    assert result.exit_code == 0, result.output


def test_replay_progress_takes_what_a_replay_reports_positionally_or_by_name() -> None:
    from services.query.cli import _reporter

    seen: list[tuple[int, int | None]] = []
    report = _reporter(lambda done, total: seen.append((done, total)))
    report(10)
    report(20, 100)
    report(done=30, total=100)
    report()
    assert seen == [(10, None), (20, 100), (30, 100)]

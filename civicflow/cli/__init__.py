"""The civicflow command line: the kernel's commands, and those each installed service adds through entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import typer

from civicflow.cli import addresses, calltaker, operations, system

# A service adds commands with an entry point in this group. Its name says where they go: `rules` adds the
# typer app it names as `civicflow rules …`; `replay.query` adds the function it names as `civicflow replay query`.
COMMANDS_GROUP = "civicflow.commands"

app = typer.Typer(help="civicflow: an open 311 case-routing platform.", no_args_is_help=True)
# the kernel's groups a service may add a command to
KERNEL_GROUPS = {"replay": operations.replay_app}
app.add_typer(operations.replay_app, name="replay")
app.add_typer(operations.keys_app, name="keys")
app.add_typer(addresses.addresses_app, name="addresses")

app.command()(system.dev)
app.command()(system.run)
app.command("migrate")(system.migrate_command)
app.command()(operations.asyncapi)
app.command()(calltaker.submit)
app.command()(calltaker.recategorise)
app.command()(calltaker.track)
app.command()(calltaker.preferences)


def add_service_commands(target: typer.Typer, contributions: list[EntryPoint]) -> list[str]:
    """Add each contribution where its name says; returns what could not be added, said for the user. One
    broken service costs only its own commands."""
    problems: list[str] = []
    for entry in sorted(contributions, key=lambda e: e.name):
        group, _, command = entry.name.rpartition(".")
        if group and group not in KERNEL_GROUPS:
            problems.append(
                f"entry point {entry.name!r} ({entry.value}) names no command group; use one of"
                f" {', '.join(sorted(KERNEL_GROUPS))}, or a plain name for a group of its own"
            )
            continue
        try:
            found = entry.load()
        except Exception as exc:  # an import error in one service's package
            problems.append(
                f"the commands of {entry.value} could not be loaded ({type(exc).__name__}: {exc});"
                " check that package, then reinstall civicflow"
            )
            continue
        if group:
            KERNEL_GROUPS[group].command(command)(found)
        elif isinstance(found, typer.Typer):
            target.add_typer(found, name=command)
        else:
            target.command(command)(found)
    return problems


for problem in add_service_commands(app, list(entry_points(group=COMMANDS_GROUP))):
    typer.echo(f"warning: {problem}", err=True)

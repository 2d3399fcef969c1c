"""`civicflow addresses load`: put a city's address-point file (CSV) into the database the services place
addresses with. Services read it at start, so restart intake after loading a new file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

addresses_app = typer.Typer(help="The city's address points, which place address-only requests.", no_args_is_help=True)


@addresses_app.command("load")
def load(
    file: Annotated[Path, typer.Argument(help="CSV with an address, a latitude and a longitude per row")],
    address_column: Annotated[str | None, typer.Option(help="Default: ADDRESS, full_address, addr…")] = None,
    lat_column: Annotated[str | None, typer.Option(help="Default: lat, latitude, y…")] = None,
    long_column: Annotated[str | None, typer.Option(help="Default: long, lon, lng, longitude, x…")] = None,
    name_column: Annotated[str | None, typer.Option(help="Places' names (City Hall); default: name, landmark…")] = None,
) -> None:
    """Replace the address points with the file's, in one transaction; says how many were loaded and refused."""
    from civicflow.address_file import AddressFileError, digest_of, read_address_file, replace_address_points
    from civicflow.city import load_city
    from civicflow.reach import database_url
    from civicflow.settings import KernelSettings

    try:
        content = file.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}") from None
    city = load_city(KernelSettings().city_file)
    try:
        found = read_address_file(content, city.service_area, address_column, lat_column, long_column, name_column)
    except AddressFileError as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not found.points:
        typer.echo(f"{file}: no usable rows; nothing was changed\n{found.report()}", err=True)
        raise typer.Exit(1)
    digest = digest_of(content, (address_column, lat_column, long_column, name_column))
    asyncio.run(replace_address_points(database_url(), found, digest, file.name))
    typer.echo(f"loaded {len(found.points)} address points from {file}; refused {len(found.refused)} rows")
    if found.refused:
        typer.echo(found.report())
    typer.echo("restart intake (or civicflow dev) to place addresses with them")

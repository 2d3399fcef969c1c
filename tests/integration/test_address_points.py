"""The city's address points through PostgreSQL: loaded from the file, replaced whole, read back by a geocoder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from civicflow.address_file import load_if_changed, read_address_file, replace_address_points
from civicflow.address_points import AddressPoint, AddressPointGeocoder, address_geocoder
from civicflow.city import load_city
from civicflow.db import libpq_url, make_engine
from civicflow.geocode import NoGeocoder, Placed, Unplaced
from civicflow.infra import Infrastructure
from civicflow.sandbox import scratch_database
from civicflow.settings import SAMPLE_CITY

CITY = load_city(SAMPLE_CITY)


@pytest.fixture
async def own_database(infrastructure: Infrastructure) -> AsyncIterator[str]:
    """A database of this test's own: the address points are one set per database."""
    async with scratch_database(infrastructure, "addresses") as url:
        yield url


async def count(url: str) -> int:
    conn = await asyncpg.connect(libpq_url(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM city.address_points"))
    finally:
        await conn.close()


async def test_the_sample_file_loads_once_and_a_geocoder_read_from_the_table_places_its_addresses(
    own_database: str,
) -> None:
    assert isinstance(await address_geocoder(own_database), NoGeocoder)  # nothing loaded yet
    assert CITY.address_points is not None
    first = await load_if_changed(own_database, CITY.address_points, CITY.service_area)
    assert first.found is not None and len(first.found.points) > 1000 and not first.found.refused
    again = await load_if_changed(own_database, CITY.address_points, CITY.service_area)
    assert again.found is None  # the same file: nothing read or written
    assert await count(own_database) == len(first.found.points)

    geocoder = await address_geocoder(own_database)
    assert isinstance(geocoder, AddressPointGeocoder)
    found = geocoder.locate("110 north example avenue, apt 2")
    assert isinstance(found, Placed) and (found.lat, found.long) == (41.887, -87.6099)
    hall = geocoder.locate("City Hall")
    assert isinstance(hall, Placed) and hall.how == "landmark"
    crossing = geocoder.locate("Oak St & Example Ave")
    assert isinstance(crossing, Placed) and crossing.how == "intersection"
    assert isinstance(geocoder.locate("110 Example Ave"), Unplaced)  # N or S


async def test_a_new_file_replaces_the_whole_set_in_one_transaction(own_database: str, tmp_path: Path) -> None:
    content = b"address,lat,long\n110 N Example Ave,41.887,-87.6099\n121 N 2nd Ave,41.8866,-87.6405\n"
    smaller = read_address_file(content, CITY.service_area)
    await replace_address_points(own_database, smaller, "digest-1", "small.csv")
    assert await count(own_database) == 2
    failing = read_address_file(b"address,lat,long\n165 N Example Ave,41.888,-87.61\n", CITY.service_area)
    failing.points.append(AddressPoint("170 N Example Ave", None, None))  # type: ignore[arg-type]
    failing.rows.append(3)  # a point with no latitude: the COPY fails after the old rows were deleted
    with pytest.raises(asyncpg.NotNullViolationError):
        await replace_address_points(own_database, failing, "digest-2", "broken.csv")
    assert await count(own_database) == 2  # the failed load changed nothing
    engine = make_engine(own_database, pool_size=1)
    try:
        geocoder = await AddressPointGeocoder.load(engine)
    finally:
        await engine.dispose()
    assert len(geocoder.index) == 2
    assert isinstance(geocoder.locate("121 N Second Avenue"), Placed)


async def test_the_load_command_reports_what_it_loaded_and_refused_and_a_broken_file_changes_nothing(
    own_database: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from civicflow.cli import app

    good = tmp_path / "points.csv"
    good.write_text("Address,Y,X\n110 N Example Ave,41.887,-87.6099\n121 N 2nd Ave,41.8866,-87.6405\n1 Far Rd,40,-87\n")
    broken = tmp_path / "broken.csv"
    broken.write_text("street,where\n1 Main St,here\n")
    env = {"CIVICFLOW_DATABASE_URL": own_database}
    runner = CliRunner()
    loaded = await asyncio.to_thread(runner.invoke, app, ["addresses", "load", str(good)], env=env)
    assert loaded.exit_code == 0, loaded.output
    assert "loaded 2 address points" in loaded.output and "refused 1 rows" in loaded.output
    assert "row 4: the point is outside Sample City's service area" in loaded.output
    refused = await asyncio.to_thread(runner.invoke, app, ["addresses", "load", str(broken)], env=env)
    assert refused.exit_code == 1 and "no column for the address, latitude and longitude" in refused.output
    assert await count(own_database) == 2


async def test_a_file_whose_every_row_is_refused_keeps_the_points_loaded(own_database: str, tmp_path: Path) -> None:
    city_file = tmp_path / "points.csv"
    city_file.write_text("address,lat,long\n110 N Example Ave,41.887,-87.6099\n121 N 2nd Ave,41.8866,-87.6405\n")
    first = await load_if_changed(own_database, city_file, CITY.service_area)
    assert first.replaced and await count(own_database) == 2
    city_file.write_text("address,lat,long\n110 N Example Ave,40.0,-87.6099\n")  # outside the service area
    refused = await load_if_changed(own_database, city_file, CITY.service_area)
    assert not refused.replaced and refused.found is not None and refused.found.refused
    assert await count(own_database) == 2  # intake still places addresses with the points it had


async def test_a_file_the_command_loaded_is_not_loaded_again_by_civicflow_dev(
    own_database: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from civicflow.cli import app

    city_file = tmp_path / "points.csv"
    city_file.write_text("address,lat,long\n110 N Example Ave,41.887,-87.6099\n")
    env = {"CIVICFLOW_DATABASE_URL": own_database}
    loaded = await asyncio.to_thread(CliRunner().invoke, app, ["addresses", "load", str(city_file)], env=env)
    assert loaded.exit_code == 0, loaded.output
    again = await load_if_changed(own_database, city_file, CITY.service_area)  # what civicflow dev does at start
    assert again.found is None

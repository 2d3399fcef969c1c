"""Writes samples/city/address_points.csv: Sample City's made-up address points, the same every run.

A grid like Chicago's: east-west streets (St) numbered east and west of Central Ave (the E/W line), and
north-south avenues (Ave) numbered north and south of Main St (the N/S line), so the same number and
street name exist twice, once on each side (1240 N Example Ave, 1240 S Example Ave). 800 house numbers
to the mile; one door every ~80 m, even on one side of the street and odd on the other. A few rows are
named places (City Hall…). Every point lies inside areas/wards.geojson. Run: python -m samples.city.make_address_points
"""

from __future__ import annotations

import csv
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / "address_points.csv"
CENTRAL_LONG = -87.650  # Central Ave: west of it is W, east of it is E
MAIN_LAT = 41.885  # Main St: north of it is N, south of it is S
NUMBERS_PER_DEGREE_LONG = 800 * 69.05 * 0.745  # 800 to the mile; a degree of longitude here is ~51 miles
NUMBERS_PER_DEGREE_LAT = 800 * 69.05
EAST_WEST = {  # street name -> latitude
    "Alder": 41.853, "Birch": 41.859, "Cedar": 41.865, "Dogwood": 41.871, "Elm": 41.877, "Main": MAIN_LAT,
    "Hawthorn": 41.891, "Juniper": 41.897, "Laurel": 41.903, "Maple": 41.909, "Oak": 41.914, "Poplar": 41.918,
}  # fmt: skip
NORTH_SOUTH = {  # avenue name -> longitude
    "Prairie": -87.696, "Harbor": -87.686, "Lake": -87.676, "1st": -87.666, "Central": CENTRAL_LONG,
    "2nd": -87.640, "3rd": -87.630, "4th": -87.620, "Example": -87.610, "Shore": -87.603,
}  # fmt: skip
STEP = 0.001  # degrees between doors along a street
PLACES = [  # (name, address, lat, long)
    ("City Hall", "121 N 2nd Ave", 41.8866, -87.6405),
    ("Riverfront Park", "1510 W Elm St", 41.8800, -87.6850),
    ("Central Library", "400 S Central Ave", 41.8792, -87.6498),
    ("Harbor Transit Center", "2 N Harbor Ave", 41.8852, -87.6862),
    ("Sample City Animal Shelter", "3010 E Alder St", 41.8532, -87.6050),
]


def _doors() -> list[tuple[str, float, float]]:
    """Doors at the same distances either side of the N/S and E/W lines, so both sides have the same numbers."""
    rows: list[tuple[str, float, float]] = []
    for name, lat in EAST_WEST.items():
        for k in range(1, 50):
            for sign, direction in ((-1, "W"), (1, "E")):
                long = round(CENTRAL_LONG + sign * k * STEP, 6)
                if not -87.6995 <= long <= -87.6005:
                    continue
                number = round(k * STEP * NUMBERS_PER_DEGREE_LONG) // 2 * 2 + k % 2  # odd doors on the south side
                lat_at = lat - 0.00008 if k % 2 else lat + 0.00008
                rows.append((f"{number} {direction} {name} St".upper(), round(lat_at, 6), long))
    for name, long in NORTH_SOUTH.items():
        for k in range(1, 36):
            for sign, direction in ((1, "N"), (-1, "S")):
                lat = round(MAIN_LAT + sign * k * STEP, 6)
                if not 41.8505 <= lat <= 41.9195:
                    continue
                number = round(k * STEP * NUMBERS_PER_DEGREE_LAT) // 2 * 2 + k % 2  # odd doors on the west side
                long_at = long - 0.0001 if k % 2 else long + 0.0001
                rows.append((f"{number} {direction} {name} Ave".upper(), lat, round(long_at, 6)))
    return rows


def main() -> None:
    with OUT.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["ADDRESS", "LATITUDE", "LONGITUDE", "NAME"])
        for address, lat, long in _doors():
            writer.writerow([address, f"{lat:.6f}", f"{long:.6f}", ""])
        for name, address, lat, long in PLACES:
            writer.writerow([address.upper(), f"{lat:.6f}", f"{long:.6f}", name])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""Writes a made-up export of Sample City's old 311 system: a year of past requests in the old system's words,
with the mess real exports have (see README.md). Deterministic: the same seed writes the same bytes.

Everything is fictional: no names, e-mail addresses on example.org, phone numbers in the (312) 555-01xx range kept
for fiction, and addresses from the sample city's address-point file, written as people write them.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

COLUMNS = [
    "Request ID",
    "Created Date",
    "Closed Date",
    "Status",
    "Agency",
    "Complaint Type",
    "Descriptor",
    "Incident Address",
    "Latitude",
    "Longitude",
    "Channel",
    "Bin Type",
    "Contact Email",
    "Contact Phone",
]
OLD_TIME = "%m/%d/%Y %I:%M:%S %p"  # the old system's own format; a few rows come in ISO 8601 instead


@dataclass(frozen=True)
class OldType:
    name: str  # in the old system's words
    agency: str
    descriptions: tuple[str, ...]
    weight: int


TYPES = (
    OldType(
        "Pothole in Street", "Dept. of Streets", ("Deep pothole in the eastbound lane", "Pothole, cars swerving"), 14
    ),
    OldType("Street Light Out", "Dept. of Streets", ("Light out on the corner", "Streetlight flickering all night"), 9),
    OldType("Noise - Street/Sidewalk", "Code Enforcement", ("Loud music from a parked car", "Jackhammer since 7am"), 8),
    OldType(
        "Noise - Residential/Loud Party", "Police (non-emergency)", ("Loud party next door", "Bass through the wall"), 7
    ),
    OldType("Sanitation / Missed Pickup", "Sanitation Dept", ("Cart not emptied", "Whole block missed"), 10),
    OldType(
        "Graffiti Removal (Private Property)", "Code Enforcement", ("Tags on the garage", "Tags on the bank wall"), 6
    ),
    OldType("Tree Trim [Parkway]", "Forestry Bureau", ("Branches over the sidewalk", "Branches over the path"), 5),
    OldType(
        "Water Leak (Street)", "Water & Sewer", ("Water bubbling up at the curb", "Flooding, water gushing out"), 5
    ),
    OldType("Traffic Signal Out", "Traffic Ops", ("Signal dark at Main and 3rd", "Signal flashing red"), 4),
    OldType(
        "Abandoned Vehicle Complaint", "Code Enforcement", ("Car with flat tyres for weeks", "Van without plates"), 5
    ),
    OldType("Animal Bite", "Animal Services", ("Bitten by a dog in the park", "Dog bite at the bus stop"), 2),
    OldType("Dead Animal Pick-Up", "Animal Services", ("Dead raccoon in the alley", "Dead bird on the walk"), 3),
    OldType("Rodent Baiting - Rat Complaint", "Health Dept", ("Rats by the dumpsters", "Rat burrows in the yard"), 5),
    OldType("Illegal Dumping", "Sanitation Dept", ("Mattress dumped in the alley", "Pallets and tyres dumped"), 5),
    OldType("Sewer Backup", "Water & Sewer", ("Sewer backing up into the basement", "Drain smells and backs up"), 3),
    OldType("No Heat", "Buildings", ("No heat in the unit since Friday", "Radiators cold"), 3),
    OldType("General Information Request", "311 Call Center", ("When is leaf pickup?", "How do I get a permit?"), 4),
    OldType("Misc. Other (see notes)", "311 Call Center", ("Question about a letter", "Something else"), 1),
)
CHANNELS = (
    ("Phone", 40),
    ("Web", 20),
    ("Mobile App", 15),
    ("PHONE ", 3),
    ("Text", 5),
    ("Walk-in", 3),
    ("Twitter", 3),
    ("E-mail", 4),
    ("", 6),
    ("fax", 1),
)
CLOSED_STATUSES = ("Closed", "Closed - Completed", "Duplicate (Closed)", "Cancelled")
OPEN_STATUSES = ("Open", "In Progress", "Assigned")
# Streets the sample city does not have (samples/city/address_points.csv): such addresses cannot be placed.
UNKNOWN_STREETS = ("N River Rd", "S Harbor Dr", "W Foundry Ln", "N Oak Park Blvd")
ADDRESS_FILE = Path(__file__).resolve().parent.parent / "city" / "address_points.csv"
START = datetime(2025, 11, 1)
NEVER = "12/31/9999 11:59:59 PM"  # what the old system writes as the closing time of a request still open
DAYS = 365


def write_export(path: Path, rows: int, seed: int = 311) -> int:
    """Write the export; returns its size in bytes."""
    data = export_bytes(rows, seed)
    path.write_bytes(data)
    return len(data)


def _city_addresses() -> list[str]:
    """The sample city's own addresses, as its address-point file spells them."""
    with ADDRESS_FILE.open(newline="", encoding="utf-8-sig") as handle:
        return [row["ADDRESS"] for row in csv.DictReader(handle) if row["ADDRESS"][:1].isdigit()]


def _as_people_write(address: str, rng: random.Random) -> str:
    """An address from the file the way a caller or clerk writes it: case, abbreviations, a dropped letter."""
    words = address.title().split()
    spelled = {"St": "Street", "Ave": "Avenue", "N": "North", "S": "South", "E": "East", "W": "West"}
    roll = rng.random()
    if roll < 0.3:
        words = [spelled.get(w, w) for w in words]
    elif roll < 0.4 and len(words) > 2 and len(words[2]) > 4:
        words[2] = words[2][:2] + words[2][3:]  # a typo in the street's name
    elif roll < 0.5:
        words = [w.upper() + "." if w in spelled else w for w in words]
    return " ".join(words)


def export_bytes(rows: int, seed: int = 311) -> bytes:
    rng = random.Random(seed)
    addresses = _city_addresses()
    out = io.BytesIO()
    out.write("\ufeff".encode())  # spreadsheet programs save "CSV UTF-8" with a byte-order mark
    out.write(_line(COLUMNS).encode())
    for number in range(1, rows + 1):
        cells, encoding = _row(rng, number, addresses)
        line = _line(cells)
        if number % 2000 == 1234:  # a quote opened and never closed: the row is refused, the next ones read
            line = line.replace(f",{cells[6]},", f',"{cells[6].strip(chr(34))},', 1) if "\n" not in cells[6] else line
        out.write(line.encode(encoding, errors="replace"))
    return out.getvalue()


def _line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue()


def _when(rng: random.Random) -> datetime:
    """A local time over the year, with more nights and weekends than office hours would give."""
    day = START + timedelta(days=rng.randrange(DAYS))
    hour = rng.choice((*range(24), 21, 22, 23, 0, 1, 19, 20))
    if rng.random() < 0.15:  # a weekend push
        day += timedelta(days=(5 - day.weekday()) % 7)
    return day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60))


def _row(rng: random.Random, number: int, addresses: list[str]) -> tuple[list[str], str]:
    kind = rng.choices(TYPES, weights=[t.weight for t in TYPES])[0]
    submitted = _when(rng)
    description = rng.choice(kind.descriptions)
    encoding = "utf-8"
    roll = rng.random()
    name = kind.name
    if roll < 0.01:
        name = ""  # blank type: refused
    elif roll < 0.03:
        name = f"  {kind.name.upper()} "  # case and blanks differ from the catalogue
    created = submitted.strftime(OLD_TIME)
    if rng.random() < 0.05:
        created = submitted.isoformat()
    if rng.random() < 0.004:
        created = rng.choice(("13/45/2026 25:61:00 PM", "N/A", "0000-00-00 00:00:00"))  # invalid dates
    closed, status = "", rng.choice(OPEN_STATUSES)
    if rng.random() < 0.8:
        status = rng.choice(CLOSED_STATUSES)
        closed_at = submitted + timedelta(hours=rng.uniform(0.5, 24 * 20))
        if rng.random() < 0.003:
            closed_at = submitted - timedelta(days=2)  # closed before it was opened: refused
        closed = closed_at.strftime(OLD_TIME) if rng.random() > 0.1 else ""  # some closed without a time
    elif number % 40 == 0:
        closed = NEVER  # the old system's "not closed yet": the mapping's not_closed_dates reads it as blank
    mess = rng.random()
    if mess < 0.08:
        description = ""  # blank: the mapping's description_when_blank
    elif mess < 0.1:
        description = f'{description}, "again" — see notes;\nsecond line, with a comma'
    elif mess < 0.104:
        description = description + "\x07"  # a control character: refused, naming the description
    elif mess < 0.106:
        description = "Café sign: " + description
        encoding = "latin-1"  # an old Windows export line: not UTF-8, refused with its byte offset
    if number % 2500 == 0:
        description = "x" * 1_000_000  # a megabyte cell: refused as too long
    address = _as_people_write(rng.choice(addresses), rng)
    if rng.random() < 0.05:
        address = f"{rng.randrange(1, 60) * 100} {rng.choice(UNKNOWN_STREETS)}"  # not in the city's file
    lat = f"{rng.uniform(41.851, 41.919):.6f}"
    long = f"{rng.uniform(-87.699, -87.601):.6f}"
    place = rng.random()
    if kind.name == "General Information Request" and rng.random() < 0.9:
        address = lat = long = ""  # a question is about no place (the service takes none)
    elif place < 0.3:
        lat = long = ""  # address only
    elif place < 0.32:
        address = lat = long = ""  # nowhere: refused unless intake allows it
    elif place < 0.325:
        lat, long = "0", "0"  # a device without a fix
    elif place < 0.33:
        lat, long = "41.99", "-87.80"  # outside the city
    elif place < 0.34:
        address = address.replace(" ", " \x0b", 1)  # a vertical tab pasted in
    channel = rng.choices([c for c, _ in CHANNELS], weights=[w for _, w in CHANNELS])[0]
    bin_type = rng.choice(("recycling", "trash", "")) if kind.name.startswith("Sanitation") else ""
    email = f"resident{number:05d}@example.org" if rng.random() < 0.3 else ""
    phone = f"(312) 555-01{rng.randrange(100):02d}" if rng.random() < 0.2 else ""  # read in the city's region
    external = f"SR-{2025000000 + number * 7}"
    if number % 997 == 0:
        external = f"SR-{2025000000 + (number - 1) * 7}"  # the old system repeated an id
    elif number % 1000 == 500:
        external = ""  # no id: keyed by a digest of the row's cells
    agency = kind.agency if rng.random() > 0.05 else "Dept. of Streets"  # some misfiled
    cells = [
        external,
        created,
        closed,
        status,
        agency,
        name,
        description,
        address,
        lat,
        long,
        channel,
        bin_type,
        email,
        phone,
    ]
    return cells, encoding

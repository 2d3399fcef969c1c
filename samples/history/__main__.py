"""`python -m samples.history --rows 5000 --out FILE.csv`: write the sample city's old-system export."""

from __future__ import annotations

import argparse
from pathlib import Path

from samples.history.export import write_export


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a made-up, messy export of Sample City's old 311 system.")
    parser.add_argument("--rows", type=int, default=5000, help="data rows to write")
    parser.add_argument("--out", type=Path, default=Path("sample_history.csv"), help="the CSV file to write")
    parser.add_argument("--seed", type=int, default=311, help="the same seed writes the same file")
    args = parser.parse_args()
    size = write_export(args.out, args.rows, args.seed)
    print(f"wrote {args.rows} rows ({size} bytes) to {args.out}")


if __name__ == "__main__":
    main()

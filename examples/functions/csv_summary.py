"""A toolvault function: a summary of a CSV file the caller passes with the call."""

import csv
import statistics
from typing import Any


def main(file: str = "data.csv") -> dict[str, Any]:
    """Summarizes each column of a CSV file with a header row.

    Numeric columns get their count, min, max and mean; other columns the number of
    distinct values and the most common one.

    Args:
        file: The name of the CSV file passed with the call.
    """
    with open(file, newline="") as data:
        rows = list(csv.DictReader(data))
    columns: dict[str, Any] = {}
    for name in rows[0] if rows else []:
        values = [row[name] for row in rows if row[name] != ""]
        try:
            numbers = [float(value) for value in values]
        except ValueError:
            counts: dict[str, int] = {}
            for value in values:
                counts[value] = counts.get(value, 0) + 1
            common = max(counts, key=counts.get) if counts else ""
            columns[name] = {"distinct": len(counts), "most_common": common}
        else:
            columns[name] = {
                "count": len(numbers),
                "min": min(numbers, default=0.0),
                "max": max(numbers, default=0.0),
                "mean": statistics.fmean(numbers) if numbers else 0.0,
            }
    return {"rows": len(rows), "columns": columns}

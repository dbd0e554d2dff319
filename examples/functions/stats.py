"""A toolvault function: summary statistics of a list of numbers."""

import statistics
from typing import Any


def main(numbers: list[float]) -> dict[str, Any]:
    """Summarizes numbers: count, mean, median, standard deviation, min and max.

    Args:
        numbers: The numbers to summarize (at least one).
    """
    if not numbers:
        raise ValueError("numbers is empty: give at least one")
    return {
        "count": len(numbers),
        "mean": statistics.fmean(numbers),
        "median": statistics.median(numbers),
        "stdev": statistics.stdev(numbers) if len(numbers) > 1 else 0.0,
        "min": min(numbers),
        "max": max(numbers),
    }

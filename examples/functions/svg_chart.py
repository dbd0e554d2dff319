"""A toolvault function: a bar chart as an SVG file, returned in out/."""

from typing import Any

BAR_WIDTH = 40
GAP = 10
HEIGHT = 200


def escaped(text: str) -> str:
    """``text`` safe inside an SVG element."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(labels: list[str], values: list[float], title: str = "") -> dict[str, Any]:
    """Draws a bar chart of values, one labelled bar each, into out/chart.svg.

    Args:
        labels: The bars' labels.
        values: The bars' values (not negative), as many as labels.
        title: A title above the chart.
    """
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels but {len(values)} values")
    top = max(values, default=0) or 1
    width = len(values) * (BAR_WIDTH + GAP) + GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT + 60}">',
        f'<text x="{GAP}" y="20">{escaped(title)}</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = round(value / top * HEIGHT)
        x = GAP + i * (BAR_WIDTH + GAP)
        parts.append(
            f'<rect x="{x}" y="{HEIGHT + 30 - height}" width="{BAR_WIDTH}" height="{height}"/>'
        )
        parts.append(f'<text x="{x}" y="{HEIGHT + 50}">{escaped(label)}</text>')
    parts.append("</svg>")
    with open("out/chart.svg", "w") as chart:
        chart.write("\n".join(parts) + "\n")
    return {"file": "out/chart.svg", "bars": len(values)}

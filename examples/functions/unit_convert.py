"""A toolvault function: convert a length, mass or temperature between units."""

from typing import Literal

# Each linear unit's kind and size in the kind's base unit (metre, kilogram).
LINEAR = {
    "m": ("length", 1.0),
    "km": ("length", 1000.0),
    "mi": ("length", 1609.344),
    "ft": ("length", 0.3048),
    "in": ("length", 0.0254),
    "kg": ("mass", 1.0),
    "g": ("mass", 0.001),
    "lb": ("mass", 0.45359237),
    "oz": ("mass", 0.028349523125),
}
# Temperatures have offsets, so they go through kelvin instead of a factor.
TEMPERATURES = ("C", "F", "K")


def main(
    value: float,
    from_unit: Literal["m", "km", "mi", "ft", "in", "kg", "g", "lb", "oz", "C", "F", "K"],
    to_unit: Literal["m", "km", "mi", "ft", "in", "kg", "g", "lb", "oz", "C", "F", "K"],
) -> float:
    """Converts a value between units of length, mass or temperature.

    Args:
        value: The quantity to convert.
        from_unit: Its unit.
        to_unit: The unit to convert to, of the same kind.
    """
    kind, to_kind = kind_of(from_unit), kind_of(to_unit)
    if kind != to_kind:
        raise ValueError(f"cannot convert {from_unit} ({kind}) to {to_unit} ({to_kind})")
    if kind == "temperature":
        return round(from_kelvin(to_kelvin(value, from_unit), to_unit), 6)
    return round(value * LINEAR[from_unit][1] / LINEAR[to_unit][1], 6)


# The helpers' names have no leading "_": the sandbox rejects such names.
def kind_of(unit: str) -> str:
    """Returns "length", "mass" or "temperature"."""
    return "temperature" if unit in TEMPERATURES else LINEAR[unit][0]


def to_kelvin(value: float, unit: str) -> float:
    """Converts a temperature in C, F or K to kelvin."""
    if unit == "C":
        return value + 273.15
    if unit == "F":
        return (value - 32) * 5 / 9 + 273.15
    return value


def from_kelvin(kelvin: float, unit: str) -> float:
    """Converts a temperature in kelvin to C, F or K."""
    if unit == "C":
        return kelvin - 273.15
    if unit == "F":
        return (kelvin - 273.15) * 9 / 5 + 32
    return kelvin

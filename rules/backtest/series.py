"""One device's stored readings as columns: the shape both replay paths read.

The store keeps a reading as JSON; the backtest keeps a device's whole window as one
int64 array of event times and one float64 array per field of its kind (NaN where the
reading lacks the field; booleans as 1.0/0.0). The fast path works on these columns
directly; the scalar path turns each row back into the very ``Reading`` the live gateway
handled, so both see the same input. Rows are in arrival order, which the replay guard
makes the order of strictly increasing ``ts`` per device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from domain import Location, Reading, Value


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the registry says about a device: enough to build its rules and place it."""

    device_id: str
    kind: str
    location: Location
    part_code: str = ""
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class DeviceSeries:
    """A device's readings in ``[since - warm-up, until]``, oldest first."""

    device: DeviceInfo
    ts: np.ndarray  # int64 epoch ms, strictly increasing
    fields: dict[str, np.ndarray]  # field → float64, NaN = absent
    booleans: frozenset[str] = frozenset()  # fields that are true/false, not numbers

    def __post_init__(self) -> None:
        for name, column in self.fields.items():
            if column.shape != self.ts.shape:
                raise ValueError(f"field {name}: {column.shape} values for {self.ts.shape} times")

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def values(self, index: int) -> dict[str, Value]:
        """The reading's values as the codec made them (absent fields left out)."""
        values: dict[str, Value] = {}
        for name, column in self.fields.items():
            number = float(column[index])
            if math.isnan(number):
                continue
            values[name] = number == 1.0 if name in self.booleans else number
        return values

    def reading(self, index: int) -> Reading:
        device = self.device
        return Reading(device.device_id, device.kind, int(self.ts[index]), self.values(index))

    def column(self, name: str) -> np.ndarray:
        """A field's values (all NaN when the kind never sends it)."""
        found = self.fields.get(name)
        return found if found is not None else np.full(len(self), np.nan)

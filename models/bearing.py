"""Rolling-element bearing geometry and its defect frequencies."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FaultOrders:
    """Defect frequencies as multiples of the shaft frequency (rpm / 60)."""

    bpfo_x: float  # ball pass frequency, outer race
    bpfi_x: float  # ball pass frequency, inner race
    bsf_x: float  # ball (roller) spin frequency
    ftf_x: float  # fundamental train (cage) frequency

    def hz(self, rpm: float) -> dict[str, float]:
        shaft_hz = rpm / 60.0
        return {
            "bpfo": self.bpfo_x * shaft_hz,
            "bpfi": self.bpfi_x * shaft_hz,
            "bsf": self.bsf_x * shaft_hz,
            "ftf": self.ftf_x * shaft_hz,
        }


@dataclass(frozen=True)
class BearingGeometry:
    """Geometry of a bearing; the default is the SKF 6205-2RS deep-groove bearing
    (9 balls, 7.94 mm balls on a 39.04 mm pitch circle), common in small pump
    motors and the drive-end bearing of the CWRU data set."""

    n_rollers: int = 9
    roller_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.n_rollers < 1:
            raise ValueError(f"n_rollers must be >= 1, got {self.n_rollers}")
        if not 0 < self.roller_diameter_mm < self.pitch_diameter_mm:
            raise ValueError(
                f"need 0 < roller_diameter_mm < pitch_diameter_mm, got {self.roller_diameter_mm}, {self.pitch_diameter_mm}"
            )

    def fault_orders(self) -> FaultOrders:
        ratio = self.roller_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))
        n = self.n_rollers
        return FaultOrders(
            bpfo_x=n / 2.0 * (1.0 - ratio),
            bpfi_x=n / 2.0 * (1.0 + ratio),
            bsf_x=self.pitch_diameter_mm / (2.0 * self.roller_diameter_mm) * (1.0 - ratio**2),
            ftf_x=0.5 * (1.0 - ratio),
        )


SKF_6205 = BearingGeometry()
# PRONOSTIA (FEMTO-ST) test bearing: 13 rollers of 3.5 mm; races 29.1 mm and 22.1 mm.
PRONOSTIA_BEARING = BearingGeometry(n_rollers=13, roller_diameter_mm=3.5, pitch_diameter_mm=25.6)

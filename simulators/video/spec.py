"""The video scenario's typed model: a street in metres, cameras looking at it, actors on it.

World frame (metres): ``x`` runs along the street, ``y`` across it, ``z`` up. The road is
``-road_width_m < y < 0``, the kerb starts at ``y = 0``, the shop-side pavement runs to the
shop fronts at ``y = pavement_width_m`` and the far pavement to the far fronts at
``y = -(road_width_m + far_pavement_width_m)``. Everything is frozen and uses tuples, so a
scene is hashable: renderers cache per-camera work on the spec itself, never on hidden state.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Point = tuple[float, float]
BGR = tuple[int, int, int]
# The gateway's zone types (detectors/config.py), restated: simulators are clients and
# speak the config format without importing the gateway's packages.
ZoneType = Literal["no_vending", "shop_front", "hawker", "no_dumping"]
IDENT = r"^[A-Za-z0-9_.-]+$"

# Named colours a scenario author may use; anything else is "#rrggbb".
PALETTE: dict[str, BGR] = {
    "red": (40, 40, 200),
    "orange": (30, 130, 235),
    "yellow": (40, 200, 230),
    "green": (60, 150, 50),
    "teal": (140, 140, 30),
    "blue": (170, 90, 30),
    "navy": (90, 40, 20),
    "purple": (130, 50, 120),
    "pink": (170, 130, 230),
    "white": (225, 225, 225),
    "silver": (180, 178, 175),
    "grey": (110, 110, 110),
    "black": (30, 30, 32),
    "brown": (40, 70, 120),
    "beige": (150, 185, 205),
}


def bgr(colour: str) -> BGR:
    """A validated colour name or ``#rrggbb`` as the BGR triple OpenCV draws with."""
    if colour in PALETTE:
        return PALETTE[colour]
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return (b, g, r)


def _check_colour(value: str) -> str:
    if value in PALETTE:
        return value
    if len(value) == 7 and value[0] == "#":
        try:
            int(value[1:], 16)
            return value
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not #rrggbb or one of {sorted(PALETTE)}")


Colour = Annotated[str, AfterValidator(_check_colour)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Street(_Frozen):
    road_width_m: float = Field(7.0, ge=3, le=30)
    pavement_width_m: float = Field(5.0, ge=2, le=15)
    far_pavement_width_m: float = Field(3.0, ge=1, le=15)
    tile_m: float = Field(0.5, ge=0.2, le=1.5)
    pavement_colour: Colour = "#8a8c94"
    asphalt_colour: Colour = "#46474a"
    crossings_x_m: tuple[float, ...] = ()  # zebra crossings, centred on these x


class Lighting(_Frozen):
    """What makes frames look filmed rather than drawn; the dataset writer randomises it."""

    exposure: float = Field(1.0, ge=0.3, le=1.8)
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # B, G, R gains: dusk is warm
    drift: float = Field(0.06, ge=0, le=0.3)  # amplitude of the slow brightness wander
    noise: float = Field(2.5, ge=0, le=20)  # sensor noise sigma, grey levels

    @field_validator("tint")
    @classmethod
    def _gains(cls, tint: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0.5 <= gain <= 1.5 for gain in tint):
            raise ValueError("tint gains must be within 0.5..1.5")
        return tint


class View(_Frozen):
    """A pinhole camera on a pole: where it stands, how high, where it looks."""

    x_m: float
    y_m: float
    height_m: float = Field(gt=1, le=60)
    yaw_deg: float = Field(ge=-180, le=180)  # 0 looks across the road (+y); + turns to +x
    tilt_deg: float = Field(gt=0, lt=90)  # down from the horizontal
    hfov_deg: float = Field(60.0, ge=15, le=120)


class CameraSpec(_Frozen):
    id: str = Field(pattern=IDENT)
    size: tuple[int, int] = (640, 360)  # width, height in pixels
    view: View
    shake_px: float = Field(0.0, ge=0, le=4)  # amplitude of a smooth wobble (wind on a pole)

    @field_validator("size")
    @classmethod
    def _even_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        # yuv420p (H.264) needs even sides; tiny frames are useless for detection.
        if any(side % 2 or not 64 <= side <= 4096 for side in size):
            raise ValueError("width and height must be even, 64..4096")
        return size


class Zone(_Frozen):
    """A rule zone on the street plane; cameras get it projected into their own image."""

    id: str = Field(pattern=IDENT)
    type: ZoneType
    polygon: tuple[Point, ...] = Field(min_length=3)  # world metres
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    address: str = ""
    grid_code: str = Field("", pattern=r"^(\d{15})?$")


class _Actor(_Frozen):
    id: str = Field(pattern=IDENT)
    start_s: float = Field(0.0, ge=0)


class _Mover(_Actor):
    """Follows ``path`` at a constant speed from ``start_s``; gone once the path is walked."""

    path: tuple[Point, ...] = Field(min_length=2)

    @property
    def length_m(self) -> float:
        return sum(
            ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
            for (x0, y0), (x1, y1) in itertools.pairwise(self.path)
        )

    @model_validator(mode="after")
    def _moves(self) -> Self:
        if self.length_m < 0.5:
            raise ValueError("path must be at least 0.5 m long")
        return self


class Pedestrian(_Mover):
    kind: Literal["pedestrian"]
    speed_m_s: float = Field(1.3, ge=0.3, le=4)
    height_m: float = Field(1.7, ge=1.0, le=2.1)
    clothes: Colour | None = None  # top colour; seeded from the id when left out
    umbrella: Colour | None = None  # colour of an open umbrella held overhead


class Car(_Mover):
    kind: Literal["car"]
    speed_m_s: float = Field(9.0, ge=1, le=30)
    body: Literal["car", "van"] = "car"
    colour: Colour | None = None


class _Placed(_Actor):
    """Stays at ``at`` (footprint centre) from ``start_s`` until ``end_s``."""

    at: Point
    end_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.end_s <= self.start_s:
            raise ValueError("end_s must be after start_s")
        return self


class Stall(_Placed):
    """A street stall: a canopy over a table of goods, with the vendor standing behind it."""

    kind: Literal["stall"]
    yaw_deg: float = 0.0  # 0: the table's long side runs along the street
    canopy: Literal["tent", "umbrella"] = "tent"
    colour: Colour | None = None
    width_m: float = Field(2.0, ge=1, le=4)
    depth_m: float = Field(1.4, ge=0.8, le=3)
    vendor: bool = True


class Rubbish(_Placed):
    """Dumped rubbish: black bin bags, cardboard boxes, or a mixed heap."""

    kind: Literal["rubbish"]
    items: Literal["bags", "boxes", "heap"] = "bags"
    count: int = Field(4, ge=1, le=16)
    spread_m: float = Field(0.8, ge=0.2, le=3)


class Tree(_Frozen):
    """Street furniture, always there, never labelled: it only occludes and distracts."""

    kind: Literal["tree"]
    id: str = Field(pattern=IDENT)
    at: Point


class LitterBin(_Frozen):
    """A public litter bin: rubbish-coloured, bin-shaped, and not a case."""

    kind: Literal["litter_bin"]
    id: str = Field(pattern=IDENT)
    at: Point
    colour: Colour = "green"


Actor = Annotated[
    Pedestrian | Car | Stall | Rubbish | Tree | LitterBin, Field(discriminator="kind")
]


class ExpectedCase(_Frozen):
    label: str  # the id of the stall or rubbish actor behind the case
    class_code: str = Field(pattern=r"^\d{5}$")
    priority: Literal["critical", "urgent", "normal", "low"]
    # Optional: when given it must equal the cameras computed from the projection.
    devices: tuple[str, ...] | None = None


class Scene(_Frozen):
    name: str
    description: str = ""
    duration_s: float = Field(gt=0, le=86_400)
    fps: int = Field(10, ge=1, le=60)
    seed: int = Field(0, ge=0)  # textures, colours and sensor noise
    street: Street = Street()
    lighting: Lighting = Lighting()
    cameras: tuple[CameraSpec, ...] = Field(min_length=1)
    zones: tuple[Zone, ...] = ()
    actors: tuple[Actor, ...] = ()
    expected_cases: tuple[ExpectedCase, ...] = ()

    def camera(self, camera_id: str) -> CameraSpec:
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(f"scene {self.name!r} has no camera {camera_id!r}")

    def camera_index(self, camera_id: str) -> int:
        return self.cameras.index(self.camera(camera_id))

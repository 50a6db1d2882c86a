"""``evidence:`` in the gateway config: where evidence files are kept, how large a picture
may be, what a sensor alert's excerpt of readings holds, and the signed links' lifetime,
public address and secret (how long evidence stays on disk is ``retention:``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# No picture served or kept is larger; the per-picture limit is chosen below it.
MAX_EVIDENCE_BYTES = 32 * 1024 * 1024


class SensorExcerptSettings(BaseModel):
    """``evidence.sensor_excerpts``: the device's recent readings filed with a sensor alert
    that fires or escalates (gateway/sensor_excerpts.py)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # The newest readings before the alert, at most this many, none older than window_s.
    max_readings: int = Field(60, ge=1, le=1000)
    window_s: int = Field(1800, ge=1, le=7 * 86_400)
    # An excerpt above this drops its oldest readings until it fits (counted in the file);
    # one that cannot fit even without them is left out of the case and counted.
    max_bytes: int = Field(256 * 1024, ge=4 * 1024, le=MAX_EVIDENCE_BYTES)


class EvidenceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Where evidence files are kept; none: the "evidence" folder beside the store. Replicas
    # of one city (gateway/replica.py) set one folder they all reach (a volume shared by
    # every replica), so a camera's pictures outlive the replica that took them, the desk
    # uploads them wherever it runs, and any replica serves their links. The generated link
    # secret then lives there too, so every replica signs and checks links alike (one
    # generated beside the store before is adopted: links already handed out stay valid).
    # Relative: to the config file's folder. Its file system must give hard links.
    dir: Path | None = None

    # Larger JPEGs are encoded again at lower quality; still larger, they are left out.
    max_picture_bytes: int = Field(2 * 1024 * 1024, ge=16 * 1024, le=MAX_EVIDENCE_BYTES)
    # A platform must fetch a picture within this time of the alert; 7 days by default.
    link_lifetime_s: int = Field(7 * 86_400, ge=60, le=400 * 86_400)
    # Where links point, e.g. "https://gw.example.org" as platforms reach the gateway; none:
    # links are paths on the gateway's API ("/evidence/…"), fine for operators, and Open311
    # then sends no media_url (it needs an absolute http(s) URL).
    public_url: str | None = Field(None, pattern=r"^https?://[^\s?#]{1,200}[^\s?#/]$")
    # The HMAC key of the links: a file (wins) or an environment variable; with neither,
    # one is generated once into evidence-link.key beside the store (mode 0600).
    link_secret_file: Path | None = None
    link_secret_env: str = Field(
        "CITYGW_EVIDENCE_LINK_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
    )
    sensor_excerpts: SensorExcerptSettings = SensorExcerptSettings()

    def folder(self, store_folder: Path) -> Path:
        """The evidence folder of a gateway whose store is in ``store_folder``."""
        return self.dir if self.dir is not None else store_folder / "evidence"

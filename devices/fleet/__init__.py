"""Existing fleets' MQTT formats, by config only: JSON with paths, or a fixed binary layout.

Each fleet says where the device id, the event time, the sequence number and each value are
in its messages, and how values map into our fields and units (``FleetSettings``). Decoding
holds them to the same checks and rejection reasons as our own format (``devices.codec``);
``MessageRouter`` picks the decoder for a topic, ours included.
"""

from devices.fleet.decode import decode_fleet_message
from devices.fleet.router import MessageRouter, Route
from devices.fleet.settings import Fleets, FleetSettings
from devices.fleet.status import decode_fleet_status

__all__ = [
    "FleetSettings",
    "Fleets",
    "MessageRouter",
    "Route",
    "decode_fleet_message",
    "decode_fleet_status",
]

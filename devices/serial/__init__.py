"""Serial field devices: RS-485 Modbus RTU slaves and ASCII line-protocol sensors.

``start_serial(settings, registry, on_result)`` runs every port configured in the gateway's
``serial`` section (``SerialSettings``) and returns ``SerialAdapters`` (``stats``, ``stop``).
Its parts: ``line_protocol`` (the sentence spec and parser), ``port`` (reopening a port
that went away), ``line_reader`` (framing + the reading thread), ``registers`` (register
maps to field values), ``modbus_poller`` (per-slave scheduling on one bus) and ``settings``.
"""

from devices.serial.adapters import (
    SerialAdapters,
    SerialConfigError,
    check_registry,
    start_serial,
)
from devices.serial.settings import RegisterSettings, SerialSettings, registry_problems

__all__ = [
    "RegisterSettings",
    "SerialAdapters",
    "SerialConfigError",
    "SerialSettings",
    "check_registry",
    "registry_problems",
    "start_serial",
]

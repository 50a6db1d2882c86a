"""Serial field-device simulator: virtual null-modem cables (ptys), line-protocol devices
and Modbus RTU slaves (pymodbus's server) replaying a scenario's timeline, the gateway's
matching ``serial`` config, and ground truth.

Its parts: ``null_modem`` (the cable, with unplug/replug), ``sentences`` (the line protocol
as devices send it), ``scenario`` (bus layout over a fleet timeline), ``line_devices``,
``modbus_devices``, ``clock`` (compressed event time), ``runner`` (``SerialSimulation``)
and ``__main__`` (``python -m simulators.serial``).
"""

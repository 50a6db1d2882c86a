"""The gateway process: config, wiring, HTTP API, telemetry store and CLI."""

"""Case bridge: case model, durable outbox, platform adapters and status sync."""

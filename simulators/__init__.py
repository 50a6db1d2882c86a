"""Simulators: device fleet, bundled case platform, scenarios with ground truth."""

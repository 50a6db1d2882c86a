"""Detectors: video sources, model backends, tracking and zones (camera analysis)."""

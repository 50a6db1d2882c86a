"""Rules: threshold rules on event time, incident correlation and dedup."""

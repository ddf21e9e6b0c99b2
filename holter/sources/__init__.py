"""Things that feed instruments: runtime metrics and event-loop lag (layer 2)."""

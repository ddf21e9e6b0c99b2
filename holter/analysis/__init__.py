"""Analysis over query results: critical paths, anomalies, patterns (layer 4)."""

"""The SQLite store and THE query API that reads it (layer 3)."""

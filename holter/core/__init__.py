"""The hot path: value cells, sketch, instruments, registry and collector (layer 1)."""

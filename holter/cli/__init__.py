"""The `holter` command line: a thin skin over the library (layer 7)."""

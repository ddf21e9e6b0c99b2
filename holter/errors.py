"""Exceptions raised by holter.

Factored out so every layer can import them without import loops. Recording never
raises these into the host program unless strict mode is on; definitions (a bad
name, a kind conflict) and tools (the CLI, queries) do.
"""

from __future__ import annotations


class HolterError(Exception):
    """Base class of every error holter raises on purpose."""


class ConfigError(HolterError, ValueError):
    """Raised when a setting, a metric definition or a tag key is not acceptable."""


class InvalidValue(HolterError, ValueError):
    """Raised in strict mode when a recorded value would otherwise be dropped."""


class StoreError(HolterError):
    """Raised when the store file cannot be opened, read or written."""


class NotAStore(StoreError):
    """Raised when a path holds no holter store and cannot hold one.

    A file of another program, a directory, a missing directory, or no file where one
    must exist.
    """


class SchemaError(StoreError):
    """Raised when a store was written by a holter with a newer schema."""


class QueryError(HolterError, ValueError):
    """Raised when a query names a bad window, tag filter or run."""

"""The two ways tracking can fail, kept apart because a run treats them differently."""

from __future__ import annotations


class TrackingError(ValueError):
    """Bad tracking input (URL, database, dimensions): raised before anything is written, so a
    mistake is fixed before a long run starts rather than found after it."""


class StoreUnavailable(RuntimeError):
    """The database could not be reached mid-run. The tracker keeps the records in its journal and
    replays them when the database returns; a run never fails because of this."""

"""Why the landing consumer stops: errors it raises rather than land or skip data wrongly."""

from __future__ import annotations


class OffsetResetError(RuntimeError):
    """The broker's log no longer holds what the table says was landed, and the policy is ``fail``."""


class LandingError(RuntimeError):
    """The landing consumer cannot continue safely."""

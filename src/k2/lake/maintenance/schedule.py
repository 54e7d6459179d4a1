"""Scheduled maintenance in the landing service (``K2_MAINTENANCE_INTERVAL_SECONDS``)."""

from __future__ import annotations

from k2.config import Settings
from k2.lake.maintenance.common import MaintenanceReport
from k2.lake.maintenance.run import maintain
from k2.pacing import Periodic


class MaintenanceScheduler(Periodic):
    """Runs :func:`maintain` every ``maintenance_interval_seconds`` in a daemon thread (landing service).

    The first run is one interval after start. Example (needs a catalog)::

        scheduler = MaintenanceScheduler(settings).start()
        ...
        scheduler.stop()
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__("k2-maintenance", settings.maintenance_interval_seconds)
        self.settings = settings
        self.runs = 0
        self.last_reports: list[MaintenanceReport] = []

    def run_once(self) -> None:
        self.last_reports = maintain(self.settings)
        self.runs += 1


def start_scheduler(settings: Settings) -> MaintenanceScheduler | None:
    """Start scheduled maintenance when ``maintenance_interval_seconds`` > 0 (else None).

    Example:
        >>> from k2.config import Settings
        >>> start_scheduler(Settings(maintenance_interval_seconds=0)) is None
        True
    """
    if settings.maintenance_interval_seconds <= 0:
        return None
    scheduler = MaintenanceScheduler(settings)
    scheduler.start()
    return scheduler

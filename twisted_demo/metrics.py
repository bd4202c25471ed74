"""
Prometheus metrics for reloads, in a registry of their own so that every
app (and every test) counts separately.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from twisted_demo.config import Config
from twisted_demo.reload import Outcome, ReloadResult


class ReloadMetrics:
    """
    Counts reloads and describes the config being served, named after
    Prometheus' own C{prometheus_config_last_reload_successful} family.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        prefix = "configmapdemo_config"
        self._reloads = Counter(
            f"{prefix}_reloads",
            "Reloads that replaced the config being served.",
            registry=self.registry,
        )
        self._failures = Counter(
            f"{prefix}_reload_failures",
            "Reloads refused because the file could not be read or was invalid.",
            registry=self.registry,
        )
        self._last_successful = Gauge(
            f"{prefix}_last_reload_successful",
            "1 if the last reload attempt succeeded, else 0.",
            registry=self.registry,
        )
        self._last_success = Gauge(
            f"{prefix}_last_reload_success_timestamp_seconds",
            "POSIX time at which the config being served was loaded.",
            registry=self.registry,
        )
        self._info = Info(
            prefix,
            "The config being served.",
            registry=self.registry,
        )

    def loaded(self, old: Config | None, new: Config) -> None:
        """
        Describe C{new}; a store subscriber.
        """
        self._last_success.set(new.loaded_at)
        self._info.info(
            {
                "sha256": new.sha256,
                "generation": new.generation or "",
                "source": new.source,
            }
        )
        if old is None:
            self._last_successful.set(1)

    def observe(self, result: ReloadResult) -> None:
        """
        Count C{result}; a reloader observer.
        """
        if result.outcome is Outcome.UPDATED:
            self._reloads.inc()
            self._last_successful.set(1)
        elif result.outcome is Outcome.UNCHANGED:
            self._last_successful.set(1)
        elif not result.repeated:
            self._failures.inc()
            self._last_successful.set(0)

"""
Prometheus metrics of a live config, built from its outcomes for a given
registry and name prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from twisted_demo.live._types import Failed, Loaded, Outcome, Unchanged, Updated

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
else:
    # prometheus_client is imported at the first collection: a program
    # whose registry is made at its first scrape (as the demo's is) does
    # not pay for it before.  The registry needs only collect().
    Collector = object

__all__ = ["LiveConfigMetrics", "Registry"]


class Registry(Protocol):
    """
    Where metrics are registered: a C{prometheus_client}
    C{CollectorRegistry}, or anything with its C{register}.
    """

    def register(self, collector: Collector) -> None: ...


class LiveConfigMetrics(Collector):
    """
    Counts reloads and describes the config being served, named after
    Prometheus' own C{prometheus_config_last_reload_successful} family:
    C{PREFIX_config_reloads_total}, C{PREFIX_config_reload_failures_total},
    C{PREFIX_config_last_reload_successful},
    C{PREFIX_config_last_reload_success_timestamp_seconds} and
    C{PREFIX_config_info}.  Call it with each outcome (pass it to
    C{LiveConfigService.observe}).  Given C{drift} (as
    C{lambda: service.drift}), it also exports
    C{PREFIX_config_drift_seconds}: how long the file on disk has differed
    from the config being served, 0 while they match.

    A collector of its own rather than C{prometheus_client}'s C{Counter}s,
    which add a C{_created} series to each counter: that only repeats the
    process's start time (C{process_start_time_seconds} says it), and
    turning it off in C{prometheus_client} is a switch for the whole
    process, which a library must not flip for its host.

    @ivar registry: Where the metrics are registered, for exposition.
    """

    def __init__(
        self,
        registry: Registry,
        prefix: str,
        drift: Callable[[], float] | None = None,
    ) -> None:
        self.registry = registry
        self._drift = drift
        self._name = f"{prefix}_config"
        self._reloads = 0
        self._failures = 0
        self._last_successful = 0.0
        self._loaded: Loaded[Any] | None = None
        registry.register(self)

    def __call__(self, outcome: Outcome[Any]) -> None:
        """
        Count C{outcome} and describe the config it leaves being served.
        """
        match outcome:
            case Updated(old, new):
                if old is not None:
                    # The first load replaced nothing.
                    self._reloads += 1
                self._describe(new)
            case Unchanged(current):
                self._describe(current)
            case Failed(repeated=False):
                self._failures += 1
                self._last_successful = 0

    def _describe(self, loaded: Loaded[Any]) -> None:
        self._last_successful = 1
        self._loaded = loaded

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        name = self._name
        yield CounterMetricFamily(
            f"{name}_reloads",
            "Reloads that replaced the config being served.",
            value=self._reloads,
        )
        yield CounterMetricFamily(
            f"{name}_reload_failures",
            "Reloads that failed: the file could not be read or was invalid, "
            "or the parser failed.",
            value=self._failures,
        )
        yield GaugeMetricFamily(
            f"{name}_last_reload_successful",
            "1 if the last reload attempt succeeded, else 0.",
            value=self._last_successful,
        )
        loaded = self._loaded
        success = GaugeMetricFamily(
            f"{name}_last_reload_success_timestamp_seconds",
            "POSIX time at which the config being served was loaded.",
            value=0 if loaded is None else loaded.loaded_at,
        )
        yield success
        if self._drift is not None:
            yield GaugeMetricFamily(
                f"{name}_drift_seconds",
                "Seconds the file on disk has differed from the config being "
                "served (a refused file differs); 0 while they match.",
                value=self._drift(),
            )
        info = InfoMetricFamily(name, "The config being served.")
        if loaded is not None:
            info.add_metric(
                [],
                {
                    "sha256": loaded.sha256,
                    "generation": loaded.generation or "",
                    "source": loaded.path,
                },
            )
        yield info

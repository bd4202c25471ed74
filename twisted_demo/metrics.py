"""
The demo's Prometheus registry, made at its first use: collectors register
as the service starts, and C{prometheus_client} (about 1 MiB and 30 ms of
imports) is loaded only once something asks for the registry, the first
request past the front (L{twisted_demo.routes}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector


class LaterRegistry:
    """
    Holds the collectors registered with it until L{registry} is first
    called, then registers them in the C{CollectorRegistry} it makes, beside
    the process's own metrics (C{process_...}, C{python_info}) that
    dashboards and alerts expect of any Prometheus client.
    """

    def __init__(self) -> None:
        self._waiting: list[Collector] = []
        self._registry: CollectorRegistry | None = None

    def register(self, collector: Collector) -> None:
        """
        Register C{collector}, now if the registry is made, else once it is.
        """
        if self._registry is None:
            self._waiting.append(collector)
        else:
            self._registry.register(collector)

    def registry(self) -> CollectorRegistry:
        """
        The registry, holding every collector registered so far.
        """
        if self._registry is None:
            from prometheus_client import (
                CollectorRegistry,
                PlatformCollector,
                ProcessCollector,
            )

            self._registry = CollectorRegistry()
            ProcessCollector(registry=self._registry)
            PlatformCollector(registry=self._registry)
            waiting, self._waiting = self._waiting, []
            for collector in waiting:
                self._registry.register(collector)
        return self._registry

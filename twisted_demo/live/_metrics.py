"""
Prometheus metrics of a live config, built from its outcomes for a given
registry and name prefix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from twisted_demo.live._types import Failed, Loaded, Outcome, Unchanged, Updated

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

    from twisted_demo.live._webhook import Answered
else:
    # prometheus_client is imported at the first collection: a program
    # whose registry is made at its first scrape (as the demo's is) does
    # not pay for it before.  The registry needs only collect().
    Collector = object

__all__ = [
    "LiveConfigMetrics",
    "Registry",
    "ReloadCounter",
    "WebhookMetrics",
    "shown_path",
]

#: The verdicts of a review, each counted from 0 (see L{Answer.verdict}).
VERDICTS = ("allowed", "denied", "skipped", "malformed", "failed")

#: Upper bounds, in seconds, of the answer time histogram's buckets:
#: prometheus_client's defaults, up to the longest deadline worth setting.
ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Registry(Protocol):
    """
    Where metrics are registered: a C{prometheus_client}
    C{CollectorRegistry}, or anything with its C{register}.
    """

    def register(self, collector: Collector) -> None: ...


def shown_path(path: str) -> str:
    """
    C{path} as text that is valid UTF-8 whatever bytes it names: a byte
    that is not UTF-8 (held by Python as a lone surrogate) is shown as
    C{\\xNN}, so that an exposition or a JSON document never fails on it.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class ReloadCounter:
    """
    The one rule for counting a live config's outcomes: a reload is an
    update that replaced a version (the first load replaced nothing), a
    failure is a refusal not reported before, and the last reload was
    successful until a refusal, and again once a version is (still)
    served.  Call it with each outcome; read its counts, or have it yield
    their metric families under a name.

    @ivar reloads: Updates that replaced a version.
    @ivar failures: Distinct refusals.
    @ivar last_successful: 1 when the last reload left a version taken,
        0 after a refusal.
    @ivar current: The version served, as the last outcome said.
    """

    def __init__(self) -> None:
        self.reloads = 0
        self.failures = 0
        self.last_successful = 0.0
        self.current: Loaded[Any] | None = None

    def __call__(self, outcome: Outcome[Any]) -> None:
        match outcome:
            case Updated(old, new):
                if old is not None:
                    self.reloads += 1
                self._serving(new)
            case Unchanged(current):
                self._serving(current)
            case Failed(repeated=False):
                self.failures += 1
                self.last_successful = 0

    def _serving(self, loaded: Loaded[Any]) -> None:
        self.last_successful = 1
        self.current = loaded

    def families(self, name: str, what: str, failures_help: str) -> Iterator[Metric]:
        """
        C{NAME_reloads_total}, C{NAME_reload_failures_total} and
        C{NAME_last_reload_successful}, for a config called C{what} in
        their help.
        """
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        yield CounterMetricFamily(
            f"{name}_reloads",
            f"Reloads that replaced the {what} being served.",
            value=self.reloads,
        )
        yield CounterMetricFamily(
            f"{name}_reload_failures", failures_help, value=self.failures
        )
        yield GaugeMetricFamily(
            f"{name}_last_reload_successful",
            "1 if the last reload attempt succeeded, else 0.",
            value=self.last_successful,
        )


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
    process, which a library must not flip for its host.  The counting is
    L{ReloadCounter}'s, which another collector of outcomes can share.

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
        self._counter = ReloadCounter()
        registry.register(self)

    def __call__(self, outcome: Outcome[Any]) -> None:
        """
        Count C{outcome} and describe the config it leaves being served.
        """
        self._counter(outcome)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import (
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        name = self._name
        yield from self._counter.families(
            name,
            "config",
            "Reloads that failed: the file could not be read or was invalid, "
            "or the parser failed.",
        )
        loaded = self._counter.current
        yield GaugeMetricFamily(
            f"{name}_last_reload_success_timestamp_seconds",
            "POSIX time at which the config being served was loaded.",
            value=0 if loaded is None else loaded.loaded_at,
        )
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
                    "generation": shown_path(loaded.generation or ""),
                    "source": shown_path(loaded.path),
                },
            )
        yield info


class WebhookMetrics(Collector):
    """
    Reviews answered by an admission webhook, by verdict
    (C{PREFIX_webhook_reviews_total{verdict=...}}), and the time each took
    to answer (C{PREFIX_webhook_answer_seconds}, a histogram).  Call it with
    each L{Answered} (pass it to C{AdmissionWebhook.observe}).  A collector
    of its own, as L{LiveConfigMetrics} is, for no C{_created} series.
    """

    def __init__(self, registry: Registry, prefix: str) -> None:
        self.registry = registry
        self._name = f"{prefix}_webhook"
        self._verdicts = dict.fromkeys(VERDICTS, 0)
        self._buckets = [0] * len(ANSWER_BUCKETS)
        self._count = 0
        self._sum = 0.0
        registry.register(self)

    def __call__(self, answered: Answered) -> None:
        self._verdicts[answered.verdict] += 1
        self._count += 1
        self._sum += answered.seconds
        for number, bound in enumerate(ANSWER_BUCKETS):
            if answered.seconds <= bound:
                self._buckets[number] += 1

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            HistogramMetricFamily,
        )

        reviews = CounterMetricFamily(
            f"{self._name}_reviews",
            "AdmissionReviews answered, by verdict: allowed (checked), "
            "skipped (allowed unchecked), denied, malformed (400), failed "
            "(503: no answer from the parser).",
            labels=["verdict"],
        )
        for verdict, count in self._verdicts.items():
            reviews.add_metric([verdict], count)
        yield reviews
        buckets = [
            (repr(bound), count)
            for bound, count in zip(ANSWER_BUCKETS, self._buckets, strict=True)
        ]
        yield HistogramMetricFamily(
            f"{self._name}_answer_seconds",
            "Seconds from a review's arrival to its answer.",
            buckets=[*buckets, ("+Inf", self._count)],
            sum_value=self._sum,
        )

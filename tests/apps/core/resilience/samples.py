"""Read one Prometheus sample from a single metric (the global registry also runs database collectors)."""

from __future__ import annotations

from prometheus_client.metrics import MetricWrapperBase


def sample(metric: MetricWrapperBase, labels: dict[str, str], suffix: str = "") -> float | None:
    """Value of ``metric`` (sample name + ``suffix``, e.g. "_total") for ``labels``; None if never set."""
    for family in metric.collect():
        for found in family.samples:
            if found.name == family.name + suffix and found.labels == labels:
                return found.value
    return None

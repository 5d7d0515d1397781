"""One sample of a running gateway's /metrics, read over HTTP as Prometheus would."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def metric(url: str, name: str, labels: dict[str, str]) -> float:
    """The value of sample `name` with exactly these labels at `url`/metrics (0 if absent)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0

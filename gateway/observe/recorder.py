"""Where each finished request goes: rolling percentiles, the access log, the ledger, and the
listeners that act on measurements (the adaptive lane limits read chats' TTFT here).

Called once per request after the response is complete, off the per-chunk path. Bodies,
prompts, completions and Authorization are never passed here, so they cannot be logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from gateway.observe.ledger import RequestLedger, error_code
from gateway.observe.log_format import FIELDS
from gateway.observe.measurement import RequestLabels, RequestRecord
from gateway.observe.request_metrics import RequestTally
from gateway.observe.rolling import RollingRegistry

access_log = logging.getLogger("lanegate.access")

Listener = Callable[[RequestLabels, RequestRecord, float], None]
# Models whose TTFT is also kept per model and upstream (early offload compares a model's
# TTFT on the remote pool with the local one's); the first this many names a client sent,
# so a client inventing names cannot grow the series. Later names fall back to per-lane.
MAX_MODEL_SERIES = 32


class Recorder:
    def __init__(
        self,
        rolling: RollingRegistry,
        *,
        access_log_enabled: bool,
        ledger: RequestLedger | None = None,
        tally: RequestTally | None = None,
    ) -> None:
        self.rolling = rolling
        self.access_log_enabled = access_log_enabled
        self.ledger = ledger
        self.tally = tally  # the /metrics counters and histograms
        self.listeners: list[Listener] = []  # called last, with what was recorded
        self.models: set[str] = set()  # the names kept per model (at most MAX_MODEL_SERIES)

    def _per_model(self, model: str) -> bool:
        if model not in self.models and len(self.models) < MAX_MODEL_SERIES:
            self.models.add(model)
        return model in self.models

    def record(self, labels: RequestLabels, record: RequestRecord, now: float) -> None:
        series = (labels.lane, labels.upstream)
        if record.ttft_s is not None:  # the one place TTFT is written
            self.rolling.add(("ttft", *series), record.ttft_s, now)
            if labels.alone:  # offload learns its single-stream baseline from these
                self.rolling.add(("ttft_solo", *series), record.ttft_s, now)
            model = labels.model
            if model and self._per_model(model):
                self.rolling.add(("ttft_model", model, labels.upstream), record.ttft_s, now)
        if record.gap_p95_s is not None:
            self.rolling.add(("gap_p95", *series), record.gap_p95_s, now)
        self.rolling.add(("duration", *series), record.duration_s, now)
        if labels.queue_s is not None:
            self.rolling.add(("queue", *series), labels.queue_s, now)
        if self.tally is not None:
            self.tally.observe(*series, labels.model, labels.queue_s, record, labels.client)
            self.tally.preempted(*series, labels.preemptions, labels.preempted_tokens)
        if self.access_log_enabled and access_log.isEnabledFor(logging.INFO):
            fields = access_fields(labels, record)
            # The JSON text for `text` logs; the fields themselves for `json` logs (merged into
            # the line's object by gateway.observe.log_format rather than nested as a string).
            access_log.info(json.dumps(fields, separators=(",", ":")), extra={FIELDS: fields})
        if self.ledger is not None:
            self.ledger.append(labels, record)
        for listener in self.listeners:
            listener(labels, record, now)


def access_fields(labels: RequestLabels, record: RequestRecord) -> dict[str, object]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "request_id": labels.request_id,
        "client": labels.client,
        "method": labels.method,
        "path": labels.path,
        "lane": labels.lane,
        "upstream": labels.upstream,
        "model": labels.model,
        "status": record.status,
        "queue_ms": ms(labels.queue_s),
        "ttft_ms": ms(record.ttft_s),
        "gap_max_ms": ms(record.gap_max_s),
        "gap_p95_ms": ms(record.gap_p95_s),
        "duration_ms": ms(record.duration_s),
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "tokens_estimated": record.tokens_estimated,
        "error": error_code(record.error),
        "trace_id": labels.trace_id,  # a code only: upstream text may echo a prompt
        "preemptions": labels.preemptions,
        "preempted_ms": ms(labels.preempted_s),
        "preempted_tokens": labels.preempted_tokens,  # counted or estimated
    }

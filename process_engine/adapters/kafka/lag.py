"""Consumer lag: log end offset minus committed offset, sampled from the broker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

log = logging.getLogger(__name__)


class LagGauge(Protocol):
    """Where the samples go (the engine's metrics)."""

    def lag_sampled(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Record the lag of each (topic, partition) sampled."""


class ConsumerLagSampler:
    """Samples the lag of this replica's partitions: log end offset minus committed offset.

    Runs on its own thread with its own AdminClient calls, so it keeps reporting while
    the consumer is stuck (for example while the database is down): that is when lag matters.
    """

    def __init__(
        self,
        admin: AdminClient,
        group_id: str,
        assigned: Callable[[], Sequence[TopicPartition]],
        metrics: LagGauge,
        interval: float = 5.0,
        timeout: float = 2.0,
    ):
        self.admin = admin
        self.group_id = group_id
        self.assigned = assigned
        self.metrics = metrics
        self.interval = interval
        self.timeout = timeout

    def run(self, stop: threading.Event) -> None:
        """Sample every `interval` seconds until stopped; a failed sample is skipped."""
        while not stop.wait(self.interval):
            try:
                self.sample()
            except Exception as error:  # the broker may be away; the next sample retries
                log.debug("consumer lag sample skipped: %s", error)

    def sample(self) -> dict[tuple[str, int], int]:
        """Query the broker once and update the gauge; returns the lags."""
        partitions = [TopicPartition(p.topic, p.partition) for p in self.assigned()]
        lags: dict[tuple[str, int], int] = {}
        if partitions:
            committed = self._committed(partitions)
            ends = self._offsets(partitions, OffsetSpec.latest())
            unset = [p for p in partitions if committed.get((p.topic, p.partition), -1) < 0]
            starts = self._offsets(unset, OffsetSpec.earliest()) if unset else {}
            for key, end in ends.items():
                start = committed.get(key, -1)
                if start < 0:
                    start = starts.get(key, 0)
                lags[key] = max(end - start, 0)
        self.metrics.lag_sampled(lags)
        return lags

    def _committed(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        request = [ConsumerGroupTopicPartitions(self.group_id, partitions)]
        futures = self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
        result = futures[self.group_id].result(self.timeout + 1)
        return {(p.topic, p.partition): p.offset for p in result.topic_partitions if p.error is None}

    def _offsets(self, partitions: list[TopicPartition], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        futures = self.admin.list_offsets({p: spec for p in partitions}, request_timeout=self.timeout)
        found = {}
        for partition, future in futures.items():
            try:
                found[(partition.topic, partition.partition)] = future.result(self.timeout + 1).offset
            except KafkaException as error:
                log.debug("no end offset for %s[%s]: %s", partition.topic, partition.partition, error)
        return found

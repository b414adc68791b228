"""A telemetry simulator for `process-engine dev`: JSON readings on the trigger topics of processes/.

About three messages a second, shaped like what devices send (InfluxDB line style:
measurement, tags, fields, timestamp). A few devices misbehave on purpose so the
example definitions start instances at once: a heat pump runs hot, a boiler's
pressure cycles through the relief threshold and another's stays high, and a
freezer door is left open.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("process_engine.simulator")

Message = tuple[str, dict[str, Any]]  # (key, value)


def iso(now: datetime) -> str:
    """`2026-01-01T12:00:00.123Z`."""
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Source(Protocol):
    """Devices reporting on one topic."""

    topic: str
    summary: str

    def tick(self, second: int, now: datetime) -> list[Message]:
        """The messages due in this second of the run."""


@dataclass
class HeatPumps:
    """The home's heat pump reporting flow temperature every 5 s; it runs hot now and then.

    One device, like the seed's `home/heatpump/control`. Readings are keyed by device,
    as real producers key telemetry, so temperature-control (no `correlate`) keeps one
    instance per pump and later readings of a pump refresh only its own instance.
    """

    rng: random.Random
    topic: str = "heatpump-telemetry"
    summary: str = "1 heat pump, hp-1 (hot for 45 s of every 135 s, so both recheck outcomes show)"
    every: int = 5
    temperatures: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.temperatures = {"hp-1": self.rng.uniform(26.5, 27.5)}  # hot from the first reading

    def tick(self, second: int, now: datetime) -> list[Message]:
        """Each pump reports once every `every` seconds, spread over the interval; all at once first."""
        due = [d for i, d in enumerate(self.temperatures) if second == 0 or (second + i) % self.every == 0]
        return [(device, self._reading(device, second, now)) for device in due]

    def _reading(self, device: str, second: int, now: datetime) -> dict[str, Any]:
        hot = (second // 45) % 3 == 0
        target = 27.5 if hot else 22.5
        # A random walk pulled towards the target: readings drift like real sensors.
        temperature = self.temperatures[device] + (target - self.temperatures[device]) * 0.5 + self.rng.gauss(0, 0.3)
        self.temperatures[device] = temperature if hot else min(temperature, 24.6)
        return {
            "measurement": "heatpump",
            "tags": {"device_id": device, "site": "home"},
            "fields": {
                "flow_temp_c": round(self.temperatures[device], 2),
                "return_temp_c": round(self.temperatures[device] - self.rng.uniform(3.0, 5.0), 2),
                "power_kw": round(self.rng.uniform(2.5, 4.5), 2),
            },
            "timestamp": iso(now),
        }


BOILER_SITES = {"b-1": "north", "b-2": "north", "b-3": "south", "b-4": "south"}


@dataclass
class Boilers:
    """Boilers reporting pressure every 3 s: b-2 cycles over the 2.8 bar threshold, b-4 stays high."""

    rng: random.Random
    topic: str = "boiler-telemetry"
    summary: str = "4 boilers (b-2 cycles through 2.8 bar every 2 min, b-4 stays high)"
    every: int = 3

    def tick(self, second: int, now: datetime) -> list[Message]:
        """Each boiler reports once every `every` seconds."""
        due = [b for i, b in enumerate(BOILER_SITES) if (second + i) % self.every == 0]
        return [(boiler, self._reading(boiler, second, now)) for boiler in due]

    def _pressure(self, boiler: str, second: int) -> float:
        if boiler == "b-4":
            return self.rng.uniform(2.9, 3.2)
        if boiler != "b-2":
            return self.rng.uniform(1.9, 2.4)
        # 120 s cycle, starting 20 s in so the threshold is crossed in the first seconds:
        # rise to 3.1 bar, hold, relief brings it down below 2.5 within ~35 s, rest.
        phase = (second + 20) % 120
        if phase < 30:
            level = 2.3 + 0.8 * phase / 30
        elif phase < 45:
            level = 3.1
        elif phase < 60:
            level = 3.1 - 0.9 * (phase - 45) / 15
        else:
            level = 2.2
        return level + self.rng.gauss(0, 0.02)

    def _reading(self, boiler: str, second: int, now: datetime) -> dict[str, Any]:
        return {
            "measurement": "boiler",
            "tags": {"boiler_id": boiler, "site": BOILER_SITES[boiler]},
            "fields": {"pressure_bar": round(self._pressure(boiler, second), 3),
                       "water_temp_c": round(self.rng.uniform(65.0, 75.0), 1)},
            "timestamp": iso(now),
        }


FREEZER_STORES = {"f-1": "oslo-1", "f-2": "oslo-1", "f-3": "bergen-2", "f-4": "bergen-2"}


@dataclass
class Freezers:
    """Freezer door events: doors open every 20-50 s and close after a few seconds; f-3's is left open."""

    rng: random.Random
    topic: str = "freezer-events"
    summary: str = "4 freezers (f-3's door is left open for 150 s every other time)"
    next_at: dict[str, int] = field(default_factory=dict)
    open: dict[str, bool] = field(default_factory=dict)
    openings: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.next_at = {f: (2 if f == "f-3" else self.rng.randint(5, 30)) for f in FREEZER_STORES}
        self.open = dict.fromkeys(FREEZER_STORES, False)
        self.openings = dict.fromkeys(FREEZER_STORES, 0)

    def tick(self, second: int, now: datetime) -> list[Message]:
        """Toggle every door whose time has come."""
        due = [f for f in FREEZER_STORES if second >= self.next_at[f]]
        return [(freezer, self._toggle(freezer, second, now)) for freezer in due]

    def _toggle(self, freezer: str, second: int, now: datetime) -> dict[str, Any]:
        self.open[freezer] = not self.open[freezer]
        if self.open[freezer]:
            self.openings[freezer] += 1
            left_open = freezer == "f-3" and self.openings[freezer] % 2 == 1
            self.next_at[freezer] = second + (150 if left_open else self.rng.randint(3, 8))
        else:
            self.next_at[freezer] = second + self.rng.randint(20, 50)
        return {
            "event": "door_open" if self.open[freezer] else "door_close",
            "tags": {"freezer_id": freezer, "store": FREEZER_STORES[freezer]},
            "fields": {"temp_c": round(self.rng.uniform(-19.5, -17.0), 1)},
            "timestamp": iso(now),
        }


@dataclass
class FreezerTemperatures:
    """Freezer temperatures every 5 s, keyed by freezer; fz-2 warms above -10 °C for 90 s of every 300 s."""

    rng: random.Random
    topic: str = "freezer-telemetry"
    summary: str = "3 freezers, fz-1..fz-3 (fz-2 above -10 °C for 90 s of every 300 s: a hold, an alarm, a cooldown)"
    every: int = 5

    def tick(self, second: int, now: datetime) -> list[Message]:
        """Each freezer reports once every `every` seconds, spread over the interval."""
        due = [f"fz-{n}" for n in (1, 2, 3) if second == 0 or (second + n) % self.every == 0]
        return [(freezer, self._reading(freezer, second, now)) for freezer in due]

    def _reading(self, freezer: str, second: int, now: datetime) -> dict[str, Any]:
        warm = freezer == "fz-2" and 30 <= second % 300 < 120
        temperature = self.rng.uniform(-9.0, -7.0) if warm else self.rng.uniform(-19.5, -16.5)
        return {
            "measurement": "freezer",
            "tags": {"freezer_id": freezer, "store": "oslo-1"},
            "fields": {"temp_c": round(temperature, 1)},
            "timestamp": iso(now),
        }


SOURCES = (HeatPumps, Boilers, Freezers, FreezerTemperatures)


class Simulator:
    """Produces the readings of every source whose topic is a trigger topic, once a second."""

    def __init__(self, bootstrap: str, topics: Iterable[str], seed: int | None = None):
        wanted = set(topics)
        rng = random.Random(seed)
        self.bootstrap = bootstrap
        self.sources: list[Source] = [source(rng) for source in SOURCES if source.topic in wanted]
        self.unknown = sorted(wanted - {source.topic for source in self.sources})
        self.sent = 0
        self.failed = 0

    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Produce until `stop` is set; delivery errors are counted and logged, never raised."""
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "error_cb": self._error})
        second = 0
        try:
            while not stop.is_set():
                self.produce_second(producer, second)
                second += 1
                stop.wait(interval)
        finally:
            producer.flush(5)

    def produce_second(self, producer: Any, second: int, now: datetime | None = None) -> int:
        """Produce one second's messages; returns how many."""
        now = now or datetime.now(UTC)
        count = 0
        for source in self.sources:
            for key, value in source.tick(second, now):
                producer.produce(source.topic, key=key, value=json.dumps(value), on_delivery=self._delivered)
                count += 1
        producer.poll(0)
        return count

    def _delivered(self, error: Any, message: Any) -> None:
        if error is None:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("simulator: delivery to %s failed: %s", message.topic(), error)

    def _error(self, error: Any) -> None:
        log.warning("simulator: kafka: %s", error)

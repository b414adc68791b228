"""A broker that is down when the engine starts is retried until it is up; nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from process_engine.app import Engine
from process_engine.devstack.servers import KafkaBroker, free_port
from process_engine.ports import InstanceQuery
from tests.fixtures import wait_until
from tests.fixtures.kafka import create_topic, produce_json
from tests.integration.engine_harness import engine_settings, seed_copy, telemetry, unique

pytestmark = pytest.mark.integration


def test_the_engine_waits_for_a_late_broker(database_url, mqtt_url, tmp_path: Path, caplog) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    topic = unique("heatpump")
    seed_copy(tmp_path, topic)
    engine = Engine(engine_settings(database_url, bootstrap, mqtt_url, tmp_path, unique("g")))
    engine.build()
    engine.start()
    broker = None
    try:
        wait_until(lambda: engine.consumer.broker_error, 20, "the consumer to report the missing broker")
        assert not engine.consumer.assigned
        said = wait_until(lambda: [r for r in caplog.records if r.name == "process_engine.consumer" and "kafka:" in r.getMessage()],
                          20, "the consumer's warning")
        # One line that names the setting, not a multi-line error or one per connection attempt.
        assert len(said) == 1 and "\n" not in said[0].getMessage()
        assert said[0].getMessage().endswith(f"check REDPANDA_BROKERS={bootstrap} and that the broker runs (retrying)")
        broker = KafkaBroker(tmp_path, port=port).start()
        create_topic(bootstrap, topic)
        wait_until(lambda: engine.consumer.assigned, 60, "the consumer to join once the broker is up")
        produce_json(bootstrap, topic, [telemetry("hp-1", 28.0)])
        [instance] = wait_until(lambda: engine.store.find_instances(InstanceQuery()), 30, "the instance")
        assert instance.variables["temperature"] == 28.0
    finally:
        engine.stop()
        if broker is not None:
            broker.stop()

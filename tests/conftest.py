"""Fixture registry: each module in tests/fixtures/ starts one kind of server."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.timescaledb",
    "tests.fixtures.kafka",
    "tests.fixtures.mqtt",
]

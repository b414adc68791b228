"""What `process-engine COMMAND --help` says: what the command does, the settings it reads, an example."""

from __future__ import annotations

DATABASE = "DATABASE_URL (postgresql://user:pass@host:5432/db)"
DEFINITIONS = "PROCESS_DEFINITIONS_PATH (default processes/)"

# command -> (one line for the command list, what it does, the settings it reads, examples)
COMMANDS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    "run": (
        "run the service: consumer, timers, actions, HTTP",
        "Consume the trigger topics, walk instances, fire durable timers, send actions "
        "through the outbox and serve the HTTP API. Applies pending migrations first and "
        "reloads definitions when their files change. Stops cleanly on SIGTERM or Ctrl-C.",
        (DATABASE, "REDPANDA_BROKERS or KAFKA_BOOTSTRAP_SERVERS (host:port,...)", "PROCESS_ENGINE_GROUP_ID",
         DEFINITIONS, "MQTT_URL (mqtt://user:pass@host:1883; empty turns MQTT off)",
         "PROCESS_ENGINE_HTTP_ADDR (default 0.0.0.0:8080)", "PROCESS_ENGINE_API_TOKEN", "MAX_MESSAGE_BYTES",
         "LOG_LEVEL, LOG_FORMAT", "HISTORY_RETENTION, HISTORY_COMPRESS_AFTER, HISTORY_REFRESH_INTERVAL (default 60s; 0s records every refresh)",
         "NOTIFY_CHANNEL_<NAME>, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*"),
        ("DATABASE_URL=postgresql://pe:pe@localhost/processes REDPANDA_BROKERS=localhost:9092 process-engine run",),
    ),
    "migrate": (
        "apply migrations/ in order, idempotently",
        "Apply the migrations the database lacks, in order, under an advisory lock so that "
        "replicas starting together do not race; then the TimescaleDB history policies.",
        (DATABASE, "HISTORY_RETENTION, HISTORY_COMPRESS_AFTER (e.g. '90 days', '7 days')"),
        ("DATABASE_URL=postgresql://pe:pe@localhost/processes process-engine migrate",),
    ),
    "validate": (
        "check definition files; exit 1 with file:line reasons on any error",
        "Load every definition file (not *.test.yaml) and check it as the engine would: "
        "YAML, keys, names, expressions, the activity graph. Prints one line per file, "
        "file:line: reason for each problem, warnings, and exits 1 on any error.",
        (),
        ("process-engine validate processes/", "process-engine validate processes/freezer.yaml"),
    ),
    "test": (
        "run flow tests (*.test.yaml) in simulated time; exit 1 on any failure",
        "Run the flow tests beside the definitions in simulated time (a 5m timer costs "
        "nothing) and compare instances, paths, actions and timers with their expectations. "
        "The README's 'Flow tests' section lists every key of a test file.",
        (f"{DEFINITIONS}: where to look for definitions not beside the test file",),
        ("process-engine test processes/", "process-engine test processes/ --junit report.xml"),
    ),
    "replay": (
        "dry-run definitions over recorded messages (JSON lines); actions not executed",
        "Run definitions over recorded telemetry, one JSON object per line "
        "({topic, key, value, partition, offset, timestamp}), through the live pipeline's "
        "dispatcher, and print the instances that would start, their paths and actions.",
        (),
        ("rpk topic consume heatpump-telemetry -o start -n 1000 > recorded.jsonl",
         "process-engine replay --from recorded.jsonl processes/"),
    ),
    "dev": (
        "the whole stack on this machine, no Docker: broker, database, MQTT, engine and a telemetry simulator",
        "Start a Kafka-compatible broker, a throwaway PostgreSQL, an MQTT broker, the "
        "engine and a simulator feeding the definitions, and print where to look. "
        "Ctrl-C stops everything and removes the temporary data.",
        (),
        ("process-engine dev", "process-engine dev --definitions my-rules/ --no-fast-timers"),
    ),
    "instances": (
        "list recent instances, newest first",
        "List instances with their status, the activity they wait on, their correlation key "
        "and when they started.",
        (DATABASE,),
        ("process-engine instances --status running --definition temperature-control",),
    ),
    "history": (
        "an instance's history, oldest first",
        "Print every history row of one instance: time, activity, event and detail.",
        (DATABASE,),
        ("process-engine history 0192f0c4-7d1e-7c3a-9b1e-2f4a5c6d7e8f",),
    ),
    "start": (
        "start an instance by hand",
        "Start an instance of a definition in PROCESS_DEFINITIONS_PATH with the given "
        "variables, as the HTTP API does; actions other than log wait in the outbox for "
        "the running service to send them.",
        (DATABASE, DEFINITIONS),
        ("process-engine start temperature-control --var device_id=hp-1 --var temperature=27.5",),
    ),
}


def epilog(command: str) -> str:
    """The text after a subcommand's options: the settings it reads and examples."""
    _, _, settings, examples = COMMANDS[command]
    parts = []
    if settings:
        parts.append("settings (environment):\n" + "\n".join(f"  {s}" for s in settings))
    parts.append("examples:\n" + "\n".join(f"  {e}" for e in examples))
    return "\n\n".join(parts)

"""T1 traced: T1's five-activity backlog again, with tracing on and spans exported over OTLP/HTTP.

The engine runs in a process of its own, as for T1, on a database and topic of its own,
with `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` pointed at a loopback OTLP/HTTP receiver in
this process. The receiver keeps each export's body and answers 200 at once; the spans
are counted after the engine has stopped, so decoding them costs the run nothing.
Beside T1 (tracing off, same run) it is the cost of tracing; the default SDK settings
(BatchSpanProcessor's queue of 2,048) are kept, so spans it drops are counted too.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks import phases
from benchmarks.engine_control import EngineProcess
from benchmarks.workload import FIVE_ACTIVITIES, produce_backlog


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.bodies.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


def traced_drain(
    bootstrap: str, mqtt_url: str, database_url: str, workdir: Path, topic: str, group: str,
    count: int, batch_size: int, postgres_pid: int, broker_pid: int,
) -> dict[str, Any]:
    """T1 with tracing on: the rate, CPU per instance and spans exported per instance."""
    folder = workdir / "processes-traced"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench-five.yaml").write_text(FIVE_ACTIVITIES.format(topic=topic), encoding="utf-8")
    produce_backlog(bootstrap, topic, count)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    server.lock, server.bodies = threading.Lock(), []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    environ = {
        "DATABASE_URL": database_url, "REDPANDA_BROKERS": bootstrap, "MQTT_URL": mqtt_url,
        "PROCESS_ENGINE_GROUP_ID": group, "PROCESS_DEFINITIONS_PATH": str(folder),
        "PROCESS_ENGINE_HTTP_ADDR": "127.0.0.1:0", "PROCESS_ENGINE_BATCH_SIZE": str(batch_size),
        "LOG_LEVEL": "WARNING",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{server.server_port}/v1/traces",
    }
    engine = EngineProcess(environ, workdir / "engine-traced.log")
    try:
        engine.wait_ready()
        drained = phases.drain_backlog(engine, count, postgres_pid, broker_pid)
        samples = engine.stop()  # shuts the tracer provider down: what it buffered is exported
    finally:
        engine.kill()
        server.shutdown()
        server.server_close()
    spans = 0
    for body in server.bodies:  # type: ignore[attr-defined]
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans += sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
    return {**drained, "batches": samples.get("batches", []), "spans": spans, "exports": len(server.bodies)}  # type: ignore[attr-defined]

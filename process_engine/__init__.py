"""process-engine: a lightweight, durable process engine for telemetry."""

__version__ = "0.1.0"

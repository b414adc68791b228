# syntax=docker/dockerfile:1
# The engine image. `docker compose up --build` runs it beside Redpanda, TimescaleDB and
# Mosquitto (docker-compose.yml); on its own:
#   docker build -t process-engine .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e REDPANDA_BROKERS=... -e MQTT_URL=... \
#     -v "$PWD/processes:/app/processes:ro" process-engine
# `run` applies the migrations before it starts consuming; `migrate`, `validate`,
# `instances`, `history` and `start` work as commands too (docker run ... process-engine validate).

# Build stage: the wheel and its dependencies (all have manylinux wheels: no compiler needed).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY process_engine ./process_engine
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROCESS_DEFINITIONS_PATH=/app/processes \
    PROCESS_ENGINE_HTTP_ADDR=0.0.0.0:8080
COPY --from=build /install /usr/local
# A fixed uid, so a mounted processes/ folder can be made readable to it.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin engine
WORKDIR /app
# The example definitions; mount your own folder over /app/processes.
COPY processes ./processes
USER engine
EXPOSE 8080
# slim has no curl: ask /healthz with the Python that is there, on the port the engine listens on.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('PROCESS_ENGINE_HTTP_ADDR', '0.0.0.0:8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["process-engine"]
CMD ["run"]

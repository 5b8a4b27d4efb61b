"""The multi-node recipe (deploy/multinode, docs/multinode.md; issue 5 point 6): nginx
in front of two web nodes, a DIMSE node and a worker node, real ``dicomcloud serve``
processes on PostgreSQL, Redis, Kafka (Tansu) and S3 (SeaweedFS).

* what is stored through one node (STOW-RS to web-1, C-STORE to the DIMSE node) is
  found and retrieved, byte for byte, through the other web node and through nginx,
  and the worker node builds its metadata (objects in the metadata bucket);
* a web node SIGKILLed while clients keep storing through nginx loses nothing that was
  acknowledged (200 and in the ReferencedSOPSequence, PS3.18 10.5.3);
* the DIMSE node SIGKILLed while a modality keeps sending: every C-STORE confirmed
  with status 0000 is retrievable once it is back;
* the worker node SIGKILLed while clients keep storing: once it is back, every stored
  instance's event has been processed (Kafka redelivers what it had not committed).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

import backends
from buses import require_redis
from conftest import require
from integration.support import (
    AS_STORED,
    Instance,
    dataset_bytes,
    multipart_related,
    new_instance,
    referenced_items,
    sop_uids,
    split_multipart,
)
from seaweedfs import SeaweedS3

# deploy/ lives next to src/, outside the installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from deploy.multinode.cluster import Cluster, ClusterConfig, nginx_executable, unique_prefix
from deploy.multinode.services import S3Target

pytestmark = [pytest.mark.interop, pytest.mark.backend, pytest.mark.timeout(600)]

TIMEOUT = 90.0
TENANT = "default"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def wait_for(condition: Callable[[], bool], what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {n.name}\n{n.log()[-1500:]}" for n in cluster.nodes.values())
    pytest.fail(f"{what}: not within {TIMEOUT:.0f}s\n{logs}")


@pytest.fixture(scope="module")
def postgresql_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    runner = asyncio.Runner()
    database = backends.database_url("postgresql", tmp_path_factory.mktemp("pg"))
    try:
        url = runner.run(database.__aenter__())
        try:
            yield url
        finally:
            runner.run(database.__aexit__(None, None, None))
    finally:
        runner.close()


@pytest.fixture(scope="module")
def cluster(
    postgresql_url: str,
    seaweed: SeaweedS3,
    tansu: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    require_redis()
    nginx = nginx_executable()
    require(Path(nginx).exists(), "nginx is not installed (scripts/bootstrap.sh test)")
    config = ClusterConfig(
        work_dir=tmp_path_factory.mktemp("multinode"),
        index_url=postgresql_url,
        kafka=tansu,
        s3=S3Target(
            seaweed.endpoint_url, seaweed.bucket, seaweed.access_key_id, seaweed.secret_access_key
        ),
        prefix=unique_prefix("multinode"),
        kafka_session_timeout=6.0,
        kafka_partitions=3,
        extra_env={"DICOMCLOUD_METADATA__QUIET_SECONDS": "0.2"},
    )
    running = Cluster(config)
    running.start()
    try:
        yield running
    finally:
        running.stop()
    # SIGTERM stopped every node cleanly, and none failed unexpectedly while it ran
    # (the SIGKILLs of the tests leave no traceback; their restarts must start cleanly).
    problems = [
        f"{node.name}: exit status {node.process.returncode}"
        for node in running.nodes.values()
        if node.process is not None and node.process.returncode != 0
    ]
    for node in running.nodes.values():
        log = node.log()
        if (at := log.find("Traceback (most recent call last)")) >= 0:
            problems.append(f"{node.name} logged:\n{log[max(0, at - 500) : at + 3000]}")
    assert not problems, "\n\n".join(problems)


# --- helpers ----------------------------------------------------------------------------


def stow(base_url: str, instances: list[Instance], timeout: float = 60) -> httpx.Response:
    body, content_type = multipart_related([i.data for i in instances])
    return httpx.post(
        f"{base_url}/dicom-web/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=timeout,
    )


def retrieve(base_url: str, instance: Instance) -> bytes:
    response = httpx.get(f"{base_url}/dicom-web{instance.path}", headers=AS_STORED, timeout=60)
    assert response.status_code == 200, f"{base_url}: {response.status_code} {response.text}"
    (part,) = split_multipart(response.content, response.headers["content-type"])
    return part.data


def qido_instances(base_url: str, study: str) -> set[str]:
    response = httpx.get(
        f"{base_url}/dicom-web/studies/{study}/instances",
        headers={"Accept": "application/dicom+json"},
        timeout=60,
    )
    if response.status_code == 204:
        return set()
    assert response.status_code == 200, response.text
    return {item["00080018"]["Value"][0] for item in response.json()}


def c_store(cluster: Cluster, instances: list[Instance]) -> None:
    ae = AE(ae_title="MULTINODE")
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 60
    for sop_class in {i.sop_class for i in instances}:
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", cluster.dicom_port, ae_title=cluster.config.ae_title)
    assert assoc.is_established
    try:
        for instance in instances:
            status = assoc.send_c_store(dcmread(BytesIO(instance.data)))
            assert status.Status == 0x0000
    finally:
        assoc.release()
        ae.shutdown()


def metadata_keys(cluster: Cluster, seaweed: SeaweedS3, study: str) -> set[str]:
    """The objects below the study in the metadata bucket prefix (relative names)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        seaweed.bucket,
        endpoint=seaweed.endpoint_url,
        region="us-east-1",
        access_key_id=seaweed.access_key_id,
        secret_access_key=seaweed.secret_access_key,
        client_options={"allow_http": True},
    )
    prefix = f"{cluster.metadata_prefix}/{TENANT}/{study}/"
    return {
        meta["path"][len(prefix) :]
        for batch in obstore.list(store, prefix=prefix)
        for meta in batch
    }


def has_instance_metadata(keys: set[str], instance: Instance) -> bool:
    """Whether the worker built ``instance``'s metadata: ``{series}/{sop}.{version}.json``."""
    return any(k.startswith(f"{instance.series}/{instance.sop}.") for k in keys)


@dataclass
class Senders:
    """Threads storing new instances through nginx, one STOW-RS request after another,
    until stopped; what was acknowledged, and what failed (not acknowledged)."""

    url: str
    study: str
    threads: int = 2
    per_request: int = 2
    pixels: int = 64 * 1024
    acknowledged: dict[str, Instance] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _running: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Senders:
        for number in range(self.threads):
            thread = threading.Thread(target=self._send, name=f"stow-{number}", daemon=True)
            thread.start()
            self._running.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._running:
            thread.join(timeout=120)

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def _send(self) -> None:
        while not self._stop.is_set():
            series = generate_uid()
            batch = [
                new_instance(study=self.study, series=series, pixels=self.pixels)
                for _ in range(self.per_request)
            ]
            try:
                response = stow(self.url, batch)
            except httpx.HTTPError as exc:
                with self._lock:
                    self.failures.append(repr(exc))
                continue
            if response.status_code not in (200, 202):
                with self._lock:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                continue
            stored = set(sop_uids(referenced_items(response.json())))
            with self._lock:
                self.acknowledged.update((i.sop, i) for i in batch if i.sop in stored)


# --- tests ------------------------------------------------------------------------------


def test_stored_through_one_node_is_read_through_another(
    cluster: Cluster, seaweed: SeaweedS3
) -> None:
    web_1, web_2 = cluster.node_url("web-1"), cluster.node_url("web-2")
    study = generate_uid()
    by_stow = [new_instance(study=study, series=generate_uid()) for _ in range(3)]
    series = generate_uid()
    by_dimse = [new_instance(study=study, series=series) for _ in range(3)]

    response = stow(web_1, by_stow)
    assert response.status_code == 200, response.text
    assert sorted(sop_uids(referenced_items(response.json()))) == sorted(i.sop for i in by_stow)
    c_store(cluster, by_dimse)

    # A large object through nginx (beyond nginx's default 1 MB body limit), streamed.
    large = new_instance(study=study, series=generate_uid(), pixels=12 << 20)
    response = stow(cluster.url, [large])
    assert response.status_code == 200, response.text
    assert retrieve(web_2, large) == large.data

    everything = {i.sop for i in [*by_stow, *by_dimse, large]}
    assert qido_instances(web_2, study) == everything
    assert qido_instances(cluster.url, study) == everything
    for instance in by_stow:
        assert retrieve(web_2, instance) == instance.data
        assert retrieve(cluster.url, instance) == instance.data
    for instance in by_dimse:  # C-STORE keeps the data set; the file meta is rebuilt
        assert dataset_bytes(retrieve(web_2, instance)) == dataset_bytes(instance.data)

    # The worker node consumed the events from Kafka and built each instance's
    # metadata in S3 (no metadata was read yet: the web nodes built none).
    wait_for(
        lambda: all(
            has_instance_metadata(metadata_keys(cluster, seaweed, study), i)
            for i in by_stow + by_dimse
        ),
        "the worker built every instance's metadata",
        cluster,
    )
    metadata = httpx.get(
        f"{cluster.dicomweb_url}/studies/{study}/series/{series}/metadata", timeout=60
    )
    assert metadata.status_code == 200, metadata.text
    assert {item["00080018"]["Value"][0] for item in metadata.json()} == {i.sop for i in by_dimse}


def test_killing_a_web_node_mid_ingest_loses_nothing_acknowledged(cluster: Cluster) -> None:
    study = generate_uid()
    with Senders(cluster.url, study) as senders:
        wait_for(lambda: senders.count() >= 6, "stores acknowledged before the kill", cluster)
        cluster.kill("web-1")
        at_kill = senders.count()
        wait_for(
            lambda: senders.count() >= at_kill + 6, "stores acknowledged after the kill", cluster
        )
    acknowledged = dict(senders.acknowledged)

    # Everything acknowledged is there, through nginx (now web-2 alone) ...
    assert set(acknowledged) <= qido_instances(cluster.url, study)
    for instance in acknowledged.values():
        assert retrieve(cluster.url, instance) == instance.data
    # ... and through the restarted node.
    cluster.restart("web-1")
    web_1 = cluster.node_url("web-1")
    assert set(acknowledged) <= qido_instances(web_1, study)
    for instance in list(acknowledged.values())[:: max(1, len(acknowledged) // 5)]:
        assert retrieve(web_1, instance) == instance.data


@dataclass
class DimseSenders:
    """A thread storing new instances by C-STORE to the DIMSE node, one association
    after another (a new one when the node dropped it), until stopped."""

    cluster: Cluster
    study: str
    acknowledged: dict[str, Instance] = field(default_factory=dict)
    aborted: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def __enter__(self) -> DimseSenders:
        self._thread = threading.Thread(target=self._send, name="c-store", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def _send(self) -> None:
        while not self._stop.is_set():
            ae = AE(ae_title="MULTINODE")
            ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 30
            ae.add_requested_context(SECONDARY_CAPTURE, ExplicitVRLittleEndian)
            try:
                assoc = ae.associate(
                    "127.0.0.1", self.cluster.dicom_port, ae_title=self.cluster.config.ae_title
                )
                while assoc.is_established and not self._stop.is_set():
                    instance = new_instance(study=self.study, pixels=64 * 1024)
                    try:
                        status = assoc.send_c_store(dcmread(BytesIO(instance.data)))
                    except RuntimeError:  # aborted between the check and the send
                        break
                    if getattr(status, "Status", None) == 0x0000:
                        with self._lock:
                            self.acknowledged[instance.sop] = instance
                if assoc.is_established:
                    assoc.release()
                else:
                    self.aborted += 1
            finally:
                ae.shutdown()
            if not self._stop.is_set():
                time.sleep(0.2)  # the node is down: try again soon


def test_killing_the_dimse_node_mid_association_loses_nothing_acknowledged(
    cluster: Cluster,
) -> None:
    study = generate_uid()
    with DimseSenders(cluster, study) as senders:
        wait_for(lambda: senders.count() >= 6, "C-STOREs confirmed before the kill", cluster)
        cluster.kill("dimse")
        at_kill = senders.count()
        cluster.restart("dimse")
        wait_for(
            lambda: senders.count() >= at_kill + 6, "C-STOREs confirmed after the restart", cluster
        )
    acknowledged = dict(senders.acknowledged)

    # Every C-STORE confirmed with status 0000 (PS3.4 B.2.3) is there, through nginx.
    assert set(acknowledged) <= qido_instances(cluster.url, study)
    for instance in acknowledged.values():
        assert dataset_bytes(retrieve(cluster.url, instance)) == dataset_bytes(instance.data)


def test_killing_the_worker_mid_ingest_loses_no_event(cluster: Cluster, seaweed: SeaweedS3) -> None:
    study = generate_uid()
    with Senders(cluster.url, study) as senders:
        wait_for(lambda: senders.count() >= 6, "stores acknowledged before the kill", cluster)
        cluster.kill("worker")
        at_kill = senders.count()
        # Stored while no worker runs: their events wait in Kafka.
        wait_for(
            lambda: senders.count() >= at_kill + 6, "stores acknowledged after the kill", cluster
        )
    acknowledged = dict(senders.acknowledged)

    cluster.restart("worker")
    wait_for(
        lambda: all(
            has_instance_metadata(metadata_keys(cluster, seaweed, study), i)
            for i in acknowledged.values()
        ),
        "the restarted worker processed the event of every stored instance",
        cluster,
    )
    by_series: dict[str, set[str]] = {}
    for instance in acknowledged.values():
        by_series.setdefault(instance.series, set()).add(instance.sop)
    for series, sops in list(by_series.items())[:3]:
        metadata = httpx.get(
            f"{cluster.dicomweb_url}/studies/{study}/series/{series}/metadata", timeout=60
        )
        assert metadata.status_code == 200, metadata.text
        assert {item["00080018"]["Value"][0] for item in metadata.json()} == sops

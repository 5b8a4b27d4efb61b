"""``python -m deploy.multinode``: start the multi-node archive on loopback, print its
addresses, and stop everything on Ctrl-C (docs/multinode.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from deploy.multinode.cluster import (
    DEFAULT_INDEX_URL,
    DEFAULT_REDIS_URL,
    Cluster,
    ClusterConfig,
    ClusterError,
    nginx_executable,
    redact,
)
from deploy.multinode.services import S3Target, drop_postgresql_database


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m deploy.multinode",
        description="2 web nodes behind nginx, 1 DIMSE node and 1 worker node on "
        "PostgreSQL + Redis + Kafka + S3, on 127.0.0.1.",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path("multinode-data"),
        help="logs, node spools, nginx prefix, and the S3 data of the SeaweedFS started "
        "here (./multinode-data; kept, like the database)",
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="start empty: drop the database, the work directory and the Redis keys first",
    )
    p.add_argument("--index-url", default=DEFAULT_INDEX_URL, help="PostgreSQL (created if missing)")
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    p.add_argument("--kafka", help="Kafka bootstrap host:port (default: start Tansu)")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (default: start SeaweedFS)")
    p.add_argument("--s3-bucket", default="dicomcloud")
    p.add_argument("--s3-region", default="us-east-1")
    p.add_argument("--s3-access-key", default="", help="(or AWS_ACCESS_KEY_ID in the environment)")
    p.add_argument(
        "--s3-secret-key", default="", help="(or AWS_SECRET_ACCESS_KEY in the environment)"
    )
    p.add_argument("--prefix", default="dicomcloud", help="S3 key, topic and Redis key prefix")
    p.add_argument("--http-port", type=int, default=8080, help="nginx (0: any free port)")
    p.add_argument("--dicom-port", type=int, default=11112, help="DIMSE node (0: free)")
    p.add_argument(
        "--node-ports",
        default="8081,8082,8083,8084",
        help="web-1,web-2,dimse,worker HTTP ports (0: free)",
    )
    p.add_argument("--ae-title", default="DICOMCLOUD")
    p.add_argument("--dimse-processes", type=int, default=1, help="DIMSE node processes")
    p.add_argument("--web-processes", type=int, default=1, help="processes per web node")
    p.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="CPU priority of the worker node (nice; 0: like the others)",
    )
    p.add_argument("--nginx", default=nginx_executable(), help="the nginx executable")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def s3_target(args: argparse.Namespace) -> S3Target | None:
    if not args.s3_endpoint:
        return None
    return S3Target(
        args.s3_endpoint,
        args.s3_bucket,
        args.s3_access_key or os.environ.get("AWS_ACCESS_KEY_ID", ""),
        args.s3_secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        args.s3_region,
    )


def reset(args: argparse.Namespace, work_dir: Path) -> None:
    """Forget the previous run: its database, its work directory (the S3 data of a
    SeaweedFS started here) and its cache keys.  Objects in an S3 bucket given with
    --s3-endpoint are left alone: use another --prefix."""
    import redis

    if args.index_url.startswith("postgresql"):
        asyncio.run(drop_postgresql_database(args.index_url))
    shutil.rmtree(work_dir, ignore_errors=True)
    client = redis.Redis.from_url(args.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{args.prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    print(f"reset: dropped {redact(args.index_url)}, {work_dir} and the cache keys")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ports = tuple(int(p) for p in args.node_ports.split(","))
    if len(ports) != 4:
        print("--node-ports: give four ports", file=sys.stderr)
        return 2
    work_dir = args.work_dir.resolve()
    if args.reset:
        reset(args, work_dir)
    config = ClusterConfig(
        work_dir=work_dir,
        index_url=args.index_url,
        redis_url=args.redis_url,
        kafka=args.kafka,
        s3=s3_target(args),
        prefix=args.prefix,
        http_port=args.http_port,
        dicom_port=args.dicom_port,
        node_ports=(ports[0], ports[1], ports[2], ports[3]),
        ae_title=args.ae_title,
        dimse_processes=args.dimse_processes,
        web_processes=args.web_processes,
        worker_nice=args.worker_nice,
        nginx=args.nginx,
        log_level=args.log_level,
    )
    cluster = Cluster(config)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    print(f"starting (logs in {work_dir / 'logs'}) ...", flush=True)
    try:
        cluster.start()  # Ctrl-C here stops what was started
    except KeyboardInterrupt:
        return 130
    except (ClusterError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(cluster.describe(), flush=True)
    print("Ctrl-C stops everything.", flush=True)
    try:
        while not stopping:
            time.sleep(0.5)
            for name in cluster.exited():
                if name == "nginx":
                    print("error: nginx exited; stopping", file=sys.stderr)
                    return 1
                # What systemd's Restart=always would do: a crashed node comes back.
                print(f"{name} exited; restarting it", file=sys.stderr, flush=True)
                try:
                    cluster.restart(name)
                except ClusterError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                print(f"{name} is back", file=sys.stderr, flush=True)
    finally:
        print("stopping ...", flush=True)
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

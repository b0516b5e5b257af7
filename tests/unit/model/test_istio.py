"""Istio ``networking.istio.io`` objects: the reference examples parse into typed values; mistakes
are errors naming the field; unknown fields are warnings."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from meshxds.errors import ManifestError, ManifestErrors
from meshxds.model import gatewayapi, istio
from meshxds.model.base import Resource
from meshxds.model.manifests import KINDS, ResourceSet, SourcedDocument, parse_documents


def not_served(resources: ResourceSet) -> list[str]:
    """The fields the warnings say meshxds parses but does not serve; any other warning fails."""
    found = []
    for warning in resources.warnings:
        served = re.search(r": field (\S+) is not served by meshxds \(", warning)
        assert served is not None, warning
        found.append(served.group(1))
    return found


# --- Istio's reference examples (istio.io/latest/docs/reference/config/networking/) ---------------

BOOKINFO_GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: my-gateway
  namespace: some-config-namespace
spec:
  selector:
    app: my-gateway-controller
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      httpsRedirect: true # sends 301 redirect for http requests
  - port:
      number: 443
      name: https-443
      protocol: HTTPS
    hosts:
    - uk.bookinfo.com
    - eu.bookinfo.com
    tls:
      mode: SIMPLE # enables HTTPS on this port
      serverCertificate: /etc/certs/servercert.pem
      privateKey: /etc/certs/privatekey.pem
  - port:
      number: 9443
      name: https-9443
      protocol: HTTPS
    hosts:
    - "bookinfo-namespace/*.bookinfo.com"
    tls:
      mode: SIMPLE # enables HTTPS on this port
      credentialName: bookinfo-secret # fetches certs from Kubernetes secret
  - port:
      number: 9080
      name: http-wildcard
      protocol: HTTP
    hosts:
    - "*"
  - port:
      number: 2379 # to expose internal service via external port 2379
      name: mongo
      protocol: MONGO
    hosts:
    - "*"
"""

BOOKINFO_RULE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo-rule
  namespace: bookinfo-namespace
spec:
  hosts:
  - reviews.prod.svc.cluster.local
  - uk.bookinfo.com
  - eu.bookinfo.com
  gateways:
  - some-config-namespace/my-gateway
  - mesh # applies to all the sidecars in the mesh
  http:
  - match:
    - headers:
        cookie:
          regex: "^(.*?;)?(user=dev-123)(;.*)?$"
    route:
    - destination:
        port:
          number: 7777
        host: reviews.qa.svc.cluster.local
  - match:
    - uri:
        prefix: /reviews/
    route:
    - destination:
        port:
          number: 9080 # can be omitted if it's the only port for reviews
        host: reviews.prod.svc.cluster.local
      weight: 80
    - destination:
        host: reviews.qa.svc.cluster.local
      weight: 20
"""

BOOKINFO_MONGO = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo-mongo
  namespace: bookinfo-namespace
spec:
  hosts:
  - mongosvr.prod.svc.cluster.local # name of internal Mongo service
  gateways:
  - some-config-namespace/my-gateway
  tcp:
  - match:
    - port: 27017
    route:
    - destination:
        host: mongo.prod.svc.cluster.local
        port:
          number: 5555
"""

PASSTHROUGH = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: my-tls-gateway
  namespace: some-config-namespace
spec:
  selector:
    app: my-tls-ingressgateway
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    hosts:
    - "*"
    tls:
      mode: PASSTHROUGH
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo-sni
  namespace: bookinfo-namespace
spec:
  hosts:
  - "*.bookinfo.com"
  gateways:
  - some-config-namespace/my-tls-gateway
  tls:
  - match:
    - port: 443
      sniHosts:
      - login.bookinfo.com
    route:
    - destination:
        host: login.prod.svc.cluster.local
  - match:
    - port: 443
      sniHosts:
      - reviews.bookinfo.com
    route:
    - destination:
        host: reviews.prod.svc.cluster.local
"""

REVIEWS_RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
  namespace: bookinfo-namespace
spec:
  host: reviews.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive:
          time: 7200s
          interval: 75s
      http:
        http2MaxRequests: 1000
        maxRequestsPerConnection: 10
        h2UpgradePolicy: UPGRADE
        idleTimeout: 1m30s
    outlierDetection:
      consecutive5xxErrors: 7
      interval: 5m
      baseEjectionTime: 15m
  subsets:
  - name: v1
    labels:
      version: v1
  - name: testversion
    labels:
      version: v3
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpCookie:
            name: user
            ttl: 0s
      portLevelSettings:
      - port:
          number: 80
        loadBalancer:
          simple: LEAST_REQUEST
        tls:
          mode: ISTIO_MUTUAL
"""

EXTERNAL_DNS = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-svc-dns
  namespace: prod
spec:
  hosts:
  - foo.bar.com
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  endpoints:
  - address: us.foo.bar.com
    ports:
      http: 8080
  - address: uk.foo.bar.com
    ports:
      http: 9080
"""

VM_WORKLOAD = """
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: details-svc
  namespace: bookinfo
spec:
  serviceAccount: details-legacy
  address: 2.2.2.2
  labels:
    app: details-legacy
    instance-id: vm1
  ports:
    http: 9080
  locality: us-east1/us-east1-b
  network: vm-network
  weight: 3
"""


def docs_of(text: str, *, path: str = "istio.yaml") -> list[SourcedDocument]:
    return [SourcedDocument(path=path, index=i, body=b) for i, b in enumerate(yaml.safe_load_all(text))]


def parse(text: str) -> ResourceSet:
    return parse_documents(docs_of(text))


def body_of(text: str) -> dict[str, Any]:
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded


def only_error(body: dict[str, Any]) -> ManifestError:
    with pytest.raises(ManifestErrors) as info:
        parse_documents([SourcedDocument(path="istio.yaml", index=0, body=body)])
    (error,) = info.value.errors
    return error


# --- the reference examples, typed --------------------------------------------------------------


def test_gateway_bookinfo_example() -> None:
    resources = parse(BOOKINFO_GATEWAY)
    assert resources.warnings == ()
    gw = resources.get(istio.Gateway, "some-config-namespace", "my-gateway")
    assert gw is not None
    assert gw.spec.selector == {"app": "my-gateway-controller"}
    http, https, https_secret, wildcard, mongo = gw.spec.servers
    assert (http.port.number, http.port.protocol, http.port.name) == (80, "HTTP", "http")
    assert http.hosts == ["uk.bookinfo.com", "eu.bookinfo.com"]
    assert http.tls is not None and http.tls.https_redirect is True and http.tls.mode is None
    assert https.tls is not None
    assert (https.tls.mode, https.tls.server_certificate, https.tls.private_key) == (
        "SIMPLE",
        "/etc/certs/servercert.pem",
        "/etc/certs/privatekey.pem",
    )
    assert https_secret.port.number == 9443
    assert https_secret.hosts == ["bookinfo-namespace/*.bookinfo.com"]
    assert https_secret.tls is not None and https_secret.tls.credential_name == "bookinfo-secret"
    assert (wildcard.port.number, wildcard.hosts, wildcard.tls) == (9080, ["*"], None)
    assert (mongo.port.number, mongo.port.protocol) == (2379, "MONGO")


def test_gateway_ref_names_its_group() -> None:
    (gw,) = parse(BOOKINFO_GATEWAY).all(istio.Gateway)
    assert gw.ref == "Gateway.networking.istio.io/some-config-namespace/my-gateway"


def test_istio_and_gateway_api_gateways_of_one_name_are_no_duplicates() -> None:
    api_gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "my-gateway", "namespace": "some-config-namespace"},
        "spec": {"gatewayClassName": "meshxds", "listeners": [{"name": "h", "port": 80, "protocol": "HTTP"}]},
    }
    docs = [*docs_of(BOOKINFO_GATEWAY), SourcedDocument(path="api.yaml", index=0, body=api_gateway)]
    resources = parse_documents(docs)
    assert len(resources.all(istio.Gateway)) == len(resources.all(gatewayapi.Gateway)) == 1


def test_virtual_service_bookinfo_rule() -> None:
    resources = parse(BOOKINFO_RULE)
    assert resources.warnings == ()
    vs = resources.get(istio.VirtualService, "bookinfo-namespace", "bookinfo-rule")
    assert vs is not None
    assert vs.spec.hosts == ["reviews.prod.svc.cluster.local", "uk.bookinfo.com", "eu.bookinfo.com"]
    assert vs.spec.gateways == ["some-config-namespace/my-gateway", "mesh"]
    dev, reviews = vs.spec.http
    cookie = dev.match[0].headers["cookie"]
    assert (cookie.regex, cookie.exact, cookie.prefix) == ("^(.*?;)?(user=dev-123)(;.*)?$", None, None)
    (to_qa,) = dev.route
    assert to_qa.destination.host == "reviews.qa.svc.cluster.local"
    assert to_qa.destination.port is not None and to_qa.destination.port.number == 7777
    assert to_qa.weight is None
    assert reviews.match[0].uri == istio.StringMatch(prefix="/reviews/")
    assert [(r.destination.host, r.weight) for r in reviews.route] == [
        ("reviews.prod.svc.cluster.local", 80),
        ("reviews.qa.svc.cluster.local", 20),
    ]
    assert reviews.route[1].destination.port is None


def test_virtual_service_tcp_mongo() -> None:
    (vs,) = parse(BOOKINFO_MONGO).all(istio.VirtualService)
    (rule,) = vs.spec.tcp
    assert rule.match[0].port == 27017
    (route,) = rule.route
    assert route.destination.host == "mongo.prod.svc.cluster.local"
    assert route.destination.port == istio.PortSelector(number=5555)
    assert vs.spec.http == [] and vs.spec.tls == []


def test_passthrough_gateway_and_sni_routes() -> None:
    resources = parse(PASSTHROUGH)
    assert resources.origins == {
        "Gateway.networking.istio.io/some-config-namespace/my-tls-gateway": "istio.yaml",
        "VirtualService/bookinfo-namespace/bookinfo-sni": "istio.yaml#1",
    }
    (gw,) = resources.all(istio.Gateway)
    (server,) = gw.spec.servers
    assert server.tls is not None and server.tls.mode == "PASSTHROUGH"
    assert server.port.protocol == "TLS"
    (vs,) = resources.all(istio.VirtualService)
    assert [(r.match[0].sni_hosts, r.match[0].port, r.route[0].destination.host) for r in vs.spec.tls] == [
        (["login.bookinfo.com"], 443, "login.prod.svc.cluster.local"),
        (["reviews.bookinfo.com"], 443, "reviews.prod.svc.cluster.local"),
    ]


def test_destination_rule_with_subsets_and_h2_upgrade() -> None:
    resources = parse(REVIEWS_RULE)
    assert resources.warnings == ()
    dr = resources.get(istio.DestinationRule, "bookinfo-namespace", "reviews")
    assert dr is not None
    assert dr.spec.host == "reviews.prod.svc.cluster.local"
    policy = dr.spec.traffic_policy
    assert policy is not None and policy.connection_pool is not None
    assert policy.load_balancer == istio.LoadBalancerSettings(simple="LEAST_REQUEST")
    tcp, http = policy.connection_pool.tcp, policy.connection_pool.http
    assert tcp is not None and http is not None
    assert tcp.max_connections == 100
    assert tcp.tcp_keepalive is not None and tcp.tcp_keepalive.time == "7200s"
    assert (http.http2_max_requests, http.max_requests_per_connection) == (1000, 10)
    assert http.h2_upgrade_policy == "UPGRADE"
    assert http.use_client_protocol is None
    assert policy.outlier_detection is not None
    assert policy.outlier_detection.consecutive_5xx_errors == 7
    v1, test = dr.spec.subsets
    assert (v1.name, v1.labels, v1.traffic_policy) == ("v1", {"version": "v1"}, None)
    assert test.traffic_policy is not None and test.traffic_policy.load_balancer is not None
    hashing = test.traffic_policy.load_balancer.consistent_hash
    assert hashing is not None and hashing.http_cookie == istio.HTTPCookie(name="user", ttl="0s")
    (port_policy,) = test.traffic_policy.port_level_settings
    assert port_policy.port == istio.PortSelector(number=80)
    assert port_policy.tls is not None and port_policy.tls.mode == "ISTIO_MUTUAL"


def test_destination_rule_durations_parse_to_seconds() -> None:
    (dr,) = parse(REVIEWS_RULE).all(istio.DestinationRule)
    policy = dr.spec.traffic_policy
    assert policy is not None and policy.connection_pool is not None
    tcp, http = policy.connection_pool.tcp, policy.connection_pool.http
    assert tcp is not None and http is not None and tcp.connect_timeout is not None
    assert istio.parse_istio_duration(tcp.connect_timeout) == pytest.approx(0.03)
    assert http.idle_timeout is not None and istio.parse_istio_duration(http.idle_timeout) == 90.0
    outlier = policy.outlier_detection
    assert outlier is not None and outlier.interval is not None and outlier.base_ejection_time is not None
    assert (
        istio.parse_istio_duration(outlier.interval),
        istio.parse_istio_duration(outlier.base_ejection_time),
    ) == (
        300.0,
        900.0,
    )


def test_service_entry_dns_with_endpoints() -> None:
    resources = parse(EXTERNAL_DNS)
    assert resources.warnings == ()
    (se,) = resources.all(istio.ServiceEntry)
    assert (se.spec.hosts, se.spec.location, se.spec.resolution) == (["foo.bar.com"], "MESH_EXTERNAL", "DNS")
    assert se.spec.ports == [istio.ServicePort(number=80, name="http", protocol="HTTP")]
    assert [(e.address, e.ports) for e in se.spec.endpoints] == [
        ("us.foo.bar.com", {"http": 8080}),
        ("uk.foo.bar.com", {"http": 9080}),
    ]


def test_workload_entry() -> None:
    (we,) = parse(VM_WORKLOAD).all(istio.WorkloadEntry)
    assert we.spec == istio.WorkloadEntrySpec(
        address="2.2.2.2",
        ports={"http": 9080},
        labels={"app": "details-legacy", "instance-id": "vm1"},
        network="vm-network",
        locality="us-east1/us-east1-b",
        weight=3,
        service_account="details-legacy",
    )


def test_every_http_route_field() -> None:
    body = body_of(BOOKINFO_RULE)
    body["spec"]["http"] = [
        {
            "name": "everything",
            "match": [
                {
                    "name": "m",
                    "uri": {"exact": "/a"},
                    "scheme": {"exact": "https"},
                    "method": {"exact": "GET"},
                    "authority": {"prefix": "uk."},
                    "port": 9080,
                    "sourceLabels": {"app": "web"},
                    "gateways": ["mesh"],
                    "queryParams": {"debug": {"exact": "1"}},
                    "ignoreUriCase": True,
                    "withoutHeaders": {"x-skip": {}},
                    "sourceNamespace": "web",
                    "statPrefix": "everything",
                }
            ],
            "route": [
                {
                    "destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}},
                    "weight": 100,
                    "headers": {"request": {"set": {"x-a": "1"}}, "response": {"remove": ["server"]}},
                }
            ],
            "rewrite": {"authority": "internal", "uriRegexRewrite": {"match": "^/a/(.*)", "rewrite": "/\\1"}},
            "timeout": "10s",
            "retries": {
                "attempts": 3,
                "perTryTimeout": "2s",
                "retryOn": "gateway-error,connect-failure",
                "retryRemoteLocalities": True,
                "retryIgnorePreviousHosts": False,
                "backoff": "25ms",
            },
            "fault": {
                "delay": {"percentage": {"value": 0.1}, "fixedDelay": "5s"},
                "abort": {"percentage": {"value": 50}, "grpcStatus": "UNAVAILABLE"},
            },
            "mirrors": [{"destination": {"host": "shadow"}, "percentage": {"value": 12.5}}],
            "corsPolicy": {
                "allowOrigins": [{"exact": "https://example.com"}, {"regex": ".*\\.example\\.com"}],
                "allowMethods": ["GET", "POST"],
                "allowHeaders": ["x-foo"],
                "exposeHeaders": ["x-bar"],
                "maxAge": "24h",
                "allowCredentials": False,
                "unmatchedPreflights": "IGNORE",
            },
            "headers": {"response": {"add": {"x-served-by": "meshxds"}}},
        },
        {
            "redirect": {
                "uri": "/v1",
                "authority": "new",
                "derivePort": "FROM_REQUEST_PORT",
                "scheme": "https",
                "redirectCode": 308,
            }
        },
        {"directResponse": {"status": 503, "body": {"bytes": "dW5hdmFpbGFibGU="}}},
        {"delegate": {"name": "reviews-delegate", "namespace": "bookinfo"}},
        {
            "route": [{"destination": {"host": "a"}}],
            "mirror": {"host": "b"},
            "mirrorPercentage": {"value": 5},
        },
    ]
    resources = parse_documents([SourcedDocument(path="vs.yaml", index=0, body=body)])
    assert not_served(resources) == [
        "spec.http[0].match[0].statPrefix",
        "spec.http[0].retries.retryRemoteLocalities",
        "spec.http[0].corsPolicy.unmatchedPreflights",
    ]
    (vs,) = resources.all(istio.VirtualService)
    full, redirect, direct, delegate, mirrored = vs.spec.http
    match = full.match[0]
    assert match.query_params["debug"].exact == "1"
    assert match.without_headers["x-skip"] == istio.StringMatch()
    assert (match.ignore_uri_case, match.stat_prefix, match.source_namespace) == (True, "everything", "web")
    assert full.route[0].headers is not None and full.route[0].headers.request is not None
    assert full.route[0].headers.request.set == {"x-a": "1"}
    assert full.rewrite is not None and full.rewrite.uri_regex_rewrite is not None
    assert full.rewrite.uri_regex_rewrite.rewrite == "/\\1"
    assert full.retries is not None and full.retries.retry_ignore_previous_hosts is False
    assert full.fault is not None and full.fault.delay is not None and full.fault.abort is not None
    assert full.fault.delay.percentage == istio.Percent(value=0.1)
    assert full.fault.abort.grpc_status == "UNAVAILABLE"
    assert full.mirrors[0].percentage == istio.Percent(value=12.5)
    assert full.cors_policy is not None and full.cors_policy.unmatched_preflights == "IGNORE"
    assert full.cors_policy.allow_origins[1].regex == ".*\\.example\\.com"
    assert redirect.redirect is not None
    assert (redirect.redirect.derive_port, redirect.redirect.redirect_code) == ("FROM_REQUEST_PORT", 308)
    assert direct.direct_response is not None and direct.direct_response.body is not None
    assert (direct.direct_response.status, direct.direct_response.body.bytes_) == (503, "dW5hdmFpbGFibGU=")
    assert delegate.delegate == istio.Delegate(name="reviews-delegate", namespace="bookinfo")
    assert mirrored.mirror == istio.Destination(host="b")
    assert mirrored.mirror_percentage == istio.Percent(value=5)


def test_every_traffic_policy_field() -> None:
    body = body_of(REVIEWS_RULE)
    body["spec"]["trafficPolicy"] = {
        "loadBalancer": {
            "consistentHash": {"useSourceIp": True, "maglev": {"tableSize": 65537}},
            "localityLbSetting": {
                "enabled": True,
                "failover": [{"from": "us-east", "to": "eu-west"}],
                "failoverPriority": ["topology.kubernetes.io/region"],
            },
            "warmup": {"duration": "60s", "minimumPercent": 10, "aggression": 1.5},
        },
        "connectionPool": {
            "tcp": {"maxConnectionDuration": "1h", "idleTimeout": "0s"},
            "http": {
                "useClientProtocol": True,
                "maxConcurrentStreams": 100,
                "http2KeepAlive": {"interval": "30s", "timeout": "5s"},
            },
        },
        "tls": {
            "mode": "SIMPLE",
            "credentialName": "client-cred",
            "sni": "reviews.example.com",
            "subjectAltNames": ["reviews"],
            "insecureSkipVerify": False,
            "caCrl": "/etc/crl.pem",
        },
        "tunnel": {"protocol": "CONNECT", "targetHost": "proxy.example.com", "targetPort": 3128},
        "proxyProtocol": {"version": "V2"},
        "retryBudget": {"percent": 20, "minRetryConcurrency": 3},
    }
    body["spec"]["exportTo"] = ["."]
    body["spec"]["workloadSelector"] = {"matchLabels": {"app": "ratings"}}
    resources = parse_documents([SourcedDocument(path="dr.yaml", index=0, body=body)])
    assert not_served(resources) == [
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "spec.trafficPolicy.loadBalancer.warmup",
        "spec.trafficPolicy.tls.caCrl",
        "spec.trafficPolicy.tunnel",
        "spec.trafficPolicy.proxyProtocol",
        "spec.trafficPolicy.retryBudget",
        "spec.workloadSelector",
    ]
    (dr,) = resources.all(istio.DestinationRule)
    policy = dr.spec.traffic_policy
    assert policy is not None and policy.load_balancer is not None
    hashing, locality = policy.load_balancer.consistent_hash, policy.load_balancer.locality_lb_setting
    assert hashing == istio.ConsistentHashLB(use_source_ip=True, maglev=istio.MagLev(table_size=65537))
    assert locality is not None and locality.failover[0].from_ == "us-east"
    assert policy.load_balancer.warmup == istio.WarmupConfiguration(
        duration="60s", minimum_percent=10, aggression=1.5
    )
    assert policy.tunnel == istio.TunnelSettings(
        protocol="CONNECT", target_host="proxy.example.com", target_port=3128
    )
    assert policy.proxy_protocol == istio.ProxyProtocol(version="V2")
    assert policy.retry_budget == istio.RetryBudget(percent=20, min_retry_concurrency=3)
    assert policy.tls is not None and policy.tls.sni == "reviews.example.com"
    pool = policy.connection_pool
    assert pool is not None and pool.http is not None and pool.tcp is not None
    assert pool.http.http2_keep_alive == istio.HTTP2KeepAlive(interval="30s", timeout="5s")
    assert pool.tcp.idle_timeout == "0s"  # 0 disables it: allowed where http's must be >= 1ms
    assert dr.spec.export_to == ["."]
    assert dr.spec.workload_selector == istio.WorkloadSelector(match_labels={"app": "ratings"})


def test_every_server_tls_field() -> None:
    body = body_of(BOOKINFO_GATEWAY)
    body["spec"]["servers"][1]["bind"] = "0.0.0.0"
    body["spec"]["servers"][1]["name"] = "bookinfo-https"
    body["spec"]["servers"][1]["port"]["targetPort"] = 8443
    body["spec"]["servers"][1]["tls"] = {
        "mode": "MUTUAL",
        "credentialNames": ["rsa-cert", "ecdsa-cert"],
        "caCertificates": "/etc/ca.pem",
        "caCrl": "/etc/crl.pem",
        "subjectAltNames": ["client.example.com"],
        "verifyCertificateSpki": ["spki"],
        "verifyCertificateHash": ["hash"],
        "minProtocolVersion": "TLSV1_2",
        "maxProtocolVersion": "TLSV1_3",
        "cipherSuites": ["ECDHE-ECDSA-AES256-GCM-SHA384"],
    }
    resources = parse_documents([SourcedDocument(path="gw.yaml", index=0, body=body)])
    assert not_served(resources) == ["spec.servers[1].tls.caCrl"]
    (gw,) = resources.all(istio.Gateway)
    server = gw.spec.servers[1]
    assert (server.bind, server.name, server.port.target_port) == ("0.0.0.0", "bookinfo-https", 8443)
    assert server.tls is not None
    assert server.tls.credential_names == ["rsa-cert", "ecdsa-cert"]
    assert (server.tls.min_protocol_version, server.tls.max_protocol_version) == ("TLSV1_2", "TLSV1_3")


# --- versions, names ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
@pytest.mark.parametrize(
    ("text", "model"),
    [
        pytest.param(BOOKINFO_GATEWAY, istio.Gateway, id="Gateway"),
        pytest.param(BOOKINFO_RULE, istio.VirtualService, id="VirtualService"),
        pytest.param(REVIEWS_RULE, istio.DestinationRule, id="DestinationRule"),
        pytest.param(EXTERNAL_DNS, istio.ServiceEntry, id="ServiceEntry"),
        pytest.param(VM_WORKLOAD, istio.WorkloadEntry, id="WorkloadEntry"),
    ],
)
def test_every_api_version_is_accepted(version: str, text: str, model: type[Resource]) -> None:
    body = body_of(text)
    body["apiVersion"] = f"networking.istio.io/{version}"
    (obj,) = parse_documents([SourcedDocument(path="x.yaml", index=0, body=body)]).all(model)
    assert obj.api_version == f"networking.istio.io/{version}"
    assert KINDS[("networking.istio.io", model.KIND)] is model


def test_other_versions_are_rejected() -> None:
    body = body_of(BOOKINFO_RULE)
    body["apiVersion"] = "networking.istio.io/v1alpha2"
    error = only_error(body)
    assert error.field_path == "apiVersion"
    assert "v1alpha2" in error.message and "v1alpha3" in error.message


def test_snake_case_field_names_of_protobuf_json_are_accepted() -> None:
    body = body_of(REVIEWS_RULE)
    body["spec"]["traffic_policy"] = body["spec"].pop("trafficPolicy")
    pool = body["spec"]["traffic_policy"]["connectionPool"]
    pool["http"] = {"h2_upgrade_policy": "DO_NOT_UPGRADE", "http1_max_pending_requests": 5}
    body["spec"]["traffic_policy"]["outlierDetection"] = {
        "consecutive_5xx_errors": 2,
        "base_ejection_time": "30s",
    }
    resources = parse_documents([SourcedDocument(path="dr.yaml", index=0, body=body)])
    assert resources.warnings == ()
    (dr,) = resources.all(istio.DestinationRule)
    policy = dr.spec.traffic_policy
    assert (
        policy is not None and policy.connection_pool is not None and policy.connection_pool.http is not None
    )
    assert policy.connection_pool.http.h2_upgrade_policy == "DO_NOT_UPGRADE"
    assert policy.connection_pool.http.http1_max_pending_requests == 5
    outlier = policy.outlier_detection
    assert outlier is not None
    assert (outlier.consecutive_5xx_errors, outlier.base_ejection_time) == (2, "30s")


def test_deprecated_mirror_percent_in_both_spellings() -> None:
    for key in ("mirrorPercent", "mirror_percent"):
        body = body_of(BOOKINFO_RULE)
        body["spec"]["http"][1]["mirror"] = {"host": "shadow"}
        body["spec"]["http"][1][key] = 30
        resources = parse_documents([SourcedDocument(path="vs.yaml", index=0, body=body)])
        assert resources.warnings == ()
        (vs,) = resources.all(istio.VirtualService)
        assert vs.spec.http[1].mirror_percent == 30


# --- errors name the field; unknown fields warn ---------------------------------------------------


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set ``a.b[0].c`` in a parsed manifest."""
    node: Any = body
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return body


@pytest.mark.parametrize(
    ("text", "path", "value", "field_path", "message"),
    [
        pytest.param(
            BOOKINFO_GATEWAY,
            "spec.servers[1].tls.mode",
            "SIMPLEX",
            "spec.servers[1].tls.mode",
            "'SIMPLE'",
            id="gateway-tls-mode-bad-enum",
        ),
        pytest.param(
            BOOKINFO_GATEWAY,
            "spec.servers[0].port.number",
            "eighty",
            "spec.servers[0].port.number",
            "valid integer",
            id="gateway-port-wrong-type",
        ),
        pytest.param(
            BOOKINFO_GATEWAY,
            "spec.servers[1].tls.minProtocolVersion",
            "TLSv1.2",
            "spec.servers[1].tls.minProtocolVersion",
            "'TLSV1_2'",
            id="gateway-tls-version-bad-enum",
        ),
        pytest.param(
            BOOKINFO_GATEWAY,
            "spec.servers[2].tls.credentialNames",
            ["a"],
            "spec.servers[2].tls",
            "only one of credentialName, credentialNames, tlsCertificates",
            id="gateway-tls-credential-oneof",
        ),
        pytest.param(
            BOOKINFO_GATEWAY,
            "spec.servers[3].hosts",
            [],
            "spec.servers[3].hosts",
            "at least 1",
            id="gateway-server-hosts-required",
        ),
        pytest.param(
            BOOKINFO_RULE,
            "spec.http[1].route[0].weight",
            "heavy",
            "spec.http[1].route[0].weight",
            "valid integer",
            id="virtualservice-weight-wrong-type",
        ),
        pytest.param(
            BOOKINFO_RULE,
            "spec.http[1].match[0].uri.exact",
            "/reviews/",
            "spec.http[1].match[0].uri",
            "only one of exact, prefix, regex",
            id="virtualservice-stringmatch-oneof",
        ),
        pytest.param(
            BOOKINFO_RULE,
            "spec.http[0].timeout",
            "5 seconds",
            "spec.http[0].timeout",
            "'5 seconds' is not a valid duration",
            id="virtualservice-timeout-bad-duration",
        ),
        pytest.param(
            BOOKINFO_RULE,
            "spec.http[0].retries",
            {"attempts": 2, "perTryTimeout": 2},
            "spec.http[0].retries.perTryTimeout",
            "valid string",
            id="virtualservice-duration-wrong-type",
        ),
        pytest.param(
            BOOKINFO_RULE,
            "spec.http[0].redirect",
            {"uri": "/elsewhere"},
            "spec.http[0]",
            "only one of route, redirect, directResponse, delegate",
            id="virtualservice-route-and-redirect",
        ),
        pytest.param(
            BOOKINFO_RULE,
            "spec.http[0].route[0].destination.host",
            "",
            "spec.http[0].route[0].destination.host",
            "at least 1",
            id="virtualservice-destination-host-empty",
        ),
        pytest.param(
            BOOKINFO_RULE,
            "spec.http[0].corsPolicy",
            {"unmatchedPreflights": "DROP"},
            "spec.http[0].corsPolicy.unmatchedPreflights",
            "'FORWARD'",
            id="virtualservice-cors-bad-enum",
        ),
        pytest.param(
            BOOKINFO_RULE,
            "spec.http[0].directResponse",
            {"status": 200, "body": {"bytes": "%%%"}},
            "spec.http[0].directResponse.body.bytes",
            "base64",
            id="virtualservice-body-bytes-not-base64",
        ),
        pytest.param(
            BOOKINFO_MONGO,
            "spec.tcp[0].match[0].port",
            70000,
            "spec.tcp[0].match[0].port",
            "65535",
            id="virtualservice-tcp-port-range",
        ),
        pytest.param(
            PASSTHROUGH.split("---")[1],
            "spec.tls[0].match[0].sniHosts",
            [],
            "spec.tls[0].match[0].sniHosts",
            "at least 1",
            id="virtualservice-tls-snihosts-required",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.subsets[1].trafficPolicy.connectionPool",
            {"http": {"h2UpgradePolicy": "ALWAYS"}},
            "spec.subsets[1].trafficPolicy.connectionPool.http.h2UpgradePolicy",
            "'UPGRADE'",
            id="destinationrule-h2upgradepolicy-bad-enum",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.trafficPolicy.loadBalancer.consistentHash",
            {"useSourceIp": True},
            "spec.trafficPolicy.loadBalancer",
            "only one of simple, consistentHash",
            id="destinationrule-loadbalancer-oneof",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.trafficPolicy.tls",
            {"mode": "PASSTHROUGH"},
            "spec.trafficPolicy.tls.mode",
            "'ISTIO_MUTUAL'",
            id="destinationrule-client-tls-bad-enum",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "30",
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "unit",
            id="destinationrule-duration-no-unit",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive",
            {"interval": "10s"},
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
            "required",
            id="destinationrule-http2keepalive-timeout-required",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive",
            {"interval": "0s", "timeout": "1s"},
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval",
            "at least 1ms",
            id="destinationrule-http2keepalive-interval-zero",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
            "0s",
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
            "at least 1ms",
            id="destinationrule-http-idletimeout-zero",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
            "500us",
            "spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration",
            "at least 1ms",
            id="destinationrule-maxconnectionduration-too-short",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
            "0s",
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time",
            "at least 1ms",
            id="destinationrule-tcpkeepalive-time-zero",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.host",
            "",
            "spec.host",
            "at least 1",
            id="destinationrule-host-required",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.subsets[0].name",
            None,
            "spec.subsets[0].name",
            "valid string",
            id="destinationrule-subset-name-required",
        ),
        pytest.param(
            EXTERNAL_DNS,
            "spec.resolution",
            "DNS_RR",
            "spec.resolution",
            "'DNS_ROUND_ROBIN'",
            id="serviceentry-resolution-bad-enum",
        ),
        pytest.param(
            EXTERNAL_DNS,
            "spec.location",
            "EXTERNAL",
            "spec.location",
            "'MESH_EXTERNAL'",
            id="serviceentry-location-bad-enum",
        ),
        pytest.param(
            EXTERNAL_DNS,
            "spec.resolution",
            "NONE",
            "spec",
            "resolution NONE (the default) cannot have endpoints",
            id="serviceentry-none-with-endpoints",
        ),
        pytest.param(
            EXTERNAL_DNS,
            "spec.endpoints[0].ports.http",
            0,
            "spec.endpoints[0].ports.http",
            "greater than or equal to 1",
            id="serviceentry-endpoint-port-range",
        ),
        pytest.param(
            VM_WORKLOAD,
            "spec.weight",
            -1,
            "spec.weight",
            "greater than or equal to 0",
            id="workloadentry-weight-negative",
        ),
    ],
)
def test_mistakes_name_the_field(text: str, path: str, value: Any, field_path: str, message: str) -> None:
    error = only_error(_set(body_of(text), path, value))
    assert error.field_path == field_path
    assert message in error.message
    assert error.path == "istio.yaml"


def test_bad_objects_are_all_reported_at_once() -> None:
    bad_rule = _set(body_of(BOOKINFO_RULE), "spec.http[0].timeout", "soon")
    bad_gateway = _set(body_of(BOOKINFO_GATEWAY), "spec.servers[1].tls.mode", "TLS")
    docs = [
        SourcedDocument(path="a.yaml", index=0, body=bad_rule),
        SourcedDocument(path="a.yaml", index=1, body=body_of(REVIEWS_RULE)),
        SourcedDocument(path="b.yaml", index=0, body=bad_gateway),
    ]
    with pytest.raises(ManifestErrors) as info:
        parse_documents(docs)
    assert [(e.path, e.ref, e.field_path) for e in info.value.errors] == [
        ("a.yaml", "VirtualService/bookinfo-namespace/bookinfo-rule", "spec.http[0].timeout"),
        ("b.yaml", "Gateway/some-config-namespace/my-gateway", "spec.servers[1].tls.mode"),
    ]


@pytest.mark.parametrize(
    ("text", "path", "warned"),
    [
        pytest.param(
            BOOKINFO_GATEWAY,
            "spec.servers[1].tls.ocspStapling",
            "spec.servers[1].tls.ocspStapling",
            id="gateway-tls-unknown",
        ),
        pytest.param(
            BOOKINFO_RULE,
            "spec.http[1].route[0].destination.weight",
            "spec.http[1].route[0].destination.weight",
            id="virtualservice-misplaced-weight",
        ),
        pytest.param(
            REVIEWS_RULE,
            "spec.trafficPolicy.connectionPool.http.maxRequestz",
            "spec.trafficPolicy.connectionPool.http.maxRequestz",
            id="destinationrule-typo",
        ),
        pytest.param(
            EXTERNAL_DNS,
            "spec.endpoints[1].priority",
            "spec.endpoints[1].priority",
            id="serviceentry-endpoint-unknown",
        ),
        pytest.param(VM_WORKLOAD, "spec.healthCheck", "spec.healthCheck", id="workloadentry-unknown"),
    ],
)
def test_unknown_fields_are_warnings(text: str, path: str, warned: str) -> None:
    body = _set(body_of(text), path, "x")
    resources = parse_documents([SourcedDocument(path="istio.yaml", index=0, body=body)])
    (obj,) = list(resources)
    unknown = [w for w in resources.warnings if "is not served by meshxds" not in w]
    assert unknown == [f"istio.yaml: {obj.ref}: field {warned} is not supported by meshxds; ignored"]


def test_unknown_field_inside_a_map_value_is_a_warning() -> None:
    body = _set(body_of(BOOKINFO_RULE), "spec.http[0].match[0].headers.cookie", {"regx": "user=dev"})
    resources = parse_documents([SourcedDocument(path="istio.yaml", index=0, body=body)])
    assert any("headers.cookie.regx" in w for w in resources.warnings)


# --- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("0.5s", 0.5),
        ("1.000000001s", 1.000000001),
        ("100ms", 0.1),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),
        ("10ns", 1e-8),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("1m30s", 90.0),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("0", 0.0),
    ],
)
def test_parse_istio_duration(text: str, seconds: float) -> None:
    assert istio.parse_istio_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1d", "1 s", "1S", "-1s", "1s ", "1.2.3s", "PT1S"])
def test_parse_istio_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid duration") as info:
        istio.parse_istio_duration(text)
    assert repr(text) in str(info.value)

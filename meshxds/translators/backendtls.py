"""Gateway API ``BackendTLSPolicy`` → the upstream TLS of the Service ports it targets.

A policy names Services (a ``sectionName``: one port, by name) and how to verify them: the CA
bundles of ConfigMaps/Secrets (``ca.crt``) or the proxy's system roots, the SNI (``hostname``),
the names the certificate must carry (``subjectAltNames``, else the hostname). Its own conditions
(Accepted, ResolvedRefs) do not depend on the Gateway; ``policy_statuses`` reports them to each
Gateway whose clusters reach a target (``status.ancestors``).

Fail closed: a policy whose CA refs are all invalid still makes its clusters TLS, with a
validation no certificate passes (``UpstreamTls.reject_all``): Envoy answers 503, never sends
the request unverified or in plaintext, and the routes stay Accepted (the policy is the broken
object, and says why).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshxds import ir
from meshxds.conditions import Condition, ObjectStatus, condition
from meshxds.model import core, gatewayapi
from meshxds.model.manifests import ResourceSet
from meshxds.translators.certificates import ca_bundle
from meshxds.translators.unserved import unserved_condition

__all__ = ["SYSTEM_CA_FILE", "AppliedTlsPolicy", "BackendTlsPolicies", "policy_statuses"]

SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
"""``wellKnownCACertificates: System``: the proxy's system bundle (Debian's path, the Envoy
images'; Envoy Gateway uses it too). A file, not Envoy's ``system_root_certs``: Envoy refuses
SAN matching without a ``trusted_ca``."""

_CA_KINDS = frozenset({("", "ConfigMap"), ("", "Secret")})


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedTlsPolicy:
    """What one policy makes of its targets' clusters, and its own conditions."""

    policy: gatewayapi.BackendTLSPolicy
    tls: ir.UpstreamTls
    ca_secret: ir.CaSecret | None
    conditions: tuple[Condition, ...]
    warnings: tuple[str, ...] = ()


def _ca_secret_name(policy: gatewayapi.BackendTLSPolicy, bundle: bytes) -> str:
    # Named by content too: a new CA changes the cluster, so Envoy drains the connections the
    # old CA verified (an SDS update under the same name would leave them open).
    digest = hashlib.sha256(bundle).hexdigest()[:12]
    return f"backendtlspolicy-ca/{policy.namespace}/{policy.name}/{digest}"


def _precedence(policy: gatewayapi.BackendTLSPolicy) -> tuple[str, str, str]:
    # The spec's order among policies on one target: the oldest, then by namespace/name. An
    # unset timestamp (a file source) sorts first, so the name decides among such policies.
    return (policy.metadata.creation_timestamp, policy.namespace, policy.name)


class BackendTlsPolicies:
    """Every BackendTLSPolicy of a run, resolved once, looked up per Service port."""

    def __init__(self, resources: ResourceSet) -> None:
        self.resources = resources
        self._applied: dict[tuple[str, str], AppliedTlsPolicy] = {}
        # (namespace, Service name, sectionName or "") → policies on it, winner first.
        self._targets: dict[tuple[str, str, str], list[gatewayapi.BackendTLSPolicy]] = defaultdict(list)
        self._warnings: dict[tuple[str, str], list[str]] = defaultdict(list)
        self._ca_secrets: dict[str, ir.CaSecret] | None = None
        self.policies = resources.all(gatewayapi.BackendTLSPolicy)
        for policy in self.policies:
            for index, ref in enumerate(policy.spec.target_refs):
                if (ref.group, ref.kind) != ("", "Service"):
                    self._warnings[policy.key].append(
                        f"{policy.ref}: spec.targetRefs[{index}]: kind {ref.group or 'core'}/{ref.kind} "
                        "is not supported (only Services); ignored"
                    )
                    continue
                self._targets[(policy.namespace, ref.name, ref.section_name or "")].append(policy)
        for policies in self._targets.values():
            policies.sort(key=_precedence)

    def for_port(self, service: core.Service, port: core.ServicePort) -> AppliedTlsPolicy | None:
        """The policy on this port: one naming the port (``sectionName``) before one on the whole
        Service; among several on the same target, the oldest."""
        for section in (port.name, "") if port.name else ("",):
            found = self._targets.get((service.namespace, service.name, section))
            if found:
                return self.applied(found[0])
        return None

    def targets(self, policy: gatewayapi.BackendTLSPolicy) -> set[tuple[str, str]]:
        """``(namespace, name)`` of the Services the policy names."""
        return {
            (policy.namespace, ref.name)
            for ref in policy.spec.target_refs
            if (ref.group, ref.kind) == ("", "Service")
        }

    def conflicted(self, policy: gatewayapi.BackendTLSPolicy) -> gatewayapi.BackendTLSPolicy | None:
        """The policy that takes precedence on one of this one's targets, if any."""
        for ref in policy.spec.target_refs:
            found = self._targets.get((policy.namespace, ref.name, ref.section_name or ""))
            if found and found[0] is not policy:
                return found[0]
        return None

    def ca_secret(self, name: str) -> ir.CaSecret | None:
        """The CA bundle a cluster's ``UpstreamTls.ca_secret`` names, if a policy made it."""
        if self._ca_secrets is None:
            self._ca_secrets = {}
            for policy in self.policies:
                found = self.applied(policy).ca_secret
                if found is not None:
                    self._ca_secrets[found.name] = found
        return self._ca_secrets.get(name)

    def applied(self, policy: gatewayapi.BackendTLSPolicy) -> AppliedTlsPolicy:
        found = self._applied.get(policy.key)
        if found is None:
            found = self._applied[policy.key] = self._resolve(policy)
        return found

    def _resolve(self, policy: gatewayapi.BackendTLSPolicy) -> AppliedTlsPolicy:
        generation = policy.metadata.generation
        validation = policy.spec.validation
        problems: list[tuple[str, str]] = []  # (reason, message) of each invalid CA ref
        warnings = list(self._warnings.get(policy.key, ()))
        bundles: list[bytes] = []
        reject_all = False
        for index, ref in enumerate(validation.ca_certificate_refs):
            at = f"caCertificateRefs[{index}]"
            if (ref.group, ref.kind) not in _CA_KINDS:
                kind = f"{ref.group or 'core'}/{ref.kind}"
                problems.append(("InvalidKind", f"{at}: kind {kind} is not supported (ConfigMap or Secret)"))
                continue
            found = ca_bundle(self.resources, ref.kind, policy.namespace, ref.name, at=at)
            if isinstance(found, tuple):
                problems.append(found)
                continue
            bundles.append(found if found.endswith(b"\n") else found + b"\n")
        accepted: Condition | None = None
        if validation.ca_certificate_refs and not bundles:
            reject_all = True
            accepted = condition(
                "Accepted",
                False,
                "NoValidCACertificate",
                "no caCertificateRefs is usable: connections to the targets fail (503) rather than "
                "go unverified",
                generation=generation,
            )
        elif validation.well_known_ca_certificates not in (None, "System"):
            reject_all = True
            accepted = condition(
                "Accepted",
                False,
                "Invalid",
                f"wellKnownCACertificates {validation.well_known_ca_certificates!r} is not supported "
                "(only System): connections to the targets fail (503)",
                generation=generation,
            )
        winner = self.conflicted(policy)
        if winner is not None:
            accepted = condition(
                "Accepted",
                False,
                "Conflicted",
                f"BackendTLSPolicy {winner.namespace}/{winner.name} takes precedence on the same target "
                "(older, or first by namespace/name)",
                generation=generation,
            )
        if accepted is None:
            accepted = condition("Accepted", True, "Accepted", "policy accepted", generation=generation)
        if problems:  # one condition per type: the first problem's reason, every message
            message = "; ".join(m for _, m in problems)
            resolved = condition("ResolvedRefs", False, problems[0][0], message, generation=generation)
        else:
            resolved = condition(
                "ResolvedRefs", True, "ResolvedRefs", "all references resolved", generation=generation
            )
        dns = tuple(s.hostname for s in validation.subject_alt_names if s.type == "Hostname")
        uris = tuple(s.uri for s in validation.subject_alt_names if s.type == "URI")
        if not validation.subject_alt_names:
            dns = (validation.hostname,)
        ca_secret = None
        if bundles:
            bundle = b"".join(bundles)
            ca_secret = ir.CaSecret(
                name=_ca_secret_name(policy, bundle),
                ca_certificates=bundle,
                source=ir.ObjectRef(kind="BackendTLSPolicy", namespace=policy.namespace, name=policy.name),
            )
        tls = ir.UpstreamTls(
            sni=validation.hostname,
            ca_file=SYSTEM_CA_FILE if ca_secret is None else None,
            ca_secret=ca_secret.name if ca_secret is not None else None,
            subject_alt_names=dns,
            uri_subject_alt_names=uris,
            reject_all=reject_all,
        )
        unserved = unserved_condition(policy)
        return AppliedTlsPolicy(
            policy=policy,
            tls=tls,
            ca_secret=ca_secret,
            conditions=(accepted, resolved, *((unserved,) if unserved is not None else ())),
            warnings=tuple(warnings),
        )


def policy_statuses(
    policies: BackendTlsPolicies,
    configs: Mapping[tuple[str, str], ir.ProxyConfig],
    *,
    controller_name: str,
) -> Iterable[ObjectStatus]:
    """Each policy's ``status.ancestors``: one entry per Gateway (of ours) whose clusters reach a
    Service the policy targets, with the policy's conditions."""
    reached: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for key, config in configs.items():
        reached[key] = {
            (c.source.namespace, c.source.name)
            for c in config.clusters
            if c.source is not None and c.source.kind == "Service"
        }
    for policy in policies.policies:
        applied = policies.applied(policy)
        targets = policies.targets(policy)
        ancestors: list[dict[str, Any]] = [
            {
                "ancestorRef": {
                    "group": gatewayapi.GROUP,
                    "kind": "Gateway",
                    "namespace": namespace,
                    "name": name,
                },
                "controllerName": controller_name,
                "conditions": [c.as_dict() for c in applied.conditions],
            }
            for (namespace, name), services in sorted(reached.items())
            if services & targets
        ]
        yield ObjectStatus(
            kind="BackendTLSPolicy",
            namespace=policy.namespace,
            name=policy.name,
            status={"ancestors": ancestors},
        )

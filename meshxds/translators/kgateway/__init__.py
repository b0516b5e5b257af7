"""kgateway (``gateway.kgateway.dev``) → IR: what kgateway adds to Gateway API: listener policies
(HTTPListenerPolicy, ListenerPolicy, ``policies.py``), cluster policies (BackendConfigPolicy,
``backend_config.py``) and route policies (TrafficPolicy ``retry`` and ``timeouts``,
``traffic.py``).

kgateway's objects extend Gateway API ones (a policy targets a Gateway or an HTTPRoute), so the
Gateway API translator calls in here; nothing here calls back into it. Its ``Backend`` kind is
resolved with every other backendRef, in the shared ``translators/backends.py``, into a cluster
built by the upstream layer (``translators/upstream``).
"""

from __future__ import annotations

from meshxds.translators.kgateway.backend_config import BackendConfigs, backend_configs
from meshxds.translators.kgateway.policies import ListenerPolicies, listener_policies, policy_target_warnings
from meshxds.translators.kgateway.traffic import (
    ListenerTraffic,
    RuleTraffic,
    TrafficPolicies,
    traffic_policies,
)

__all__ = [
    "BackendConfigs",
    "ListenerPolicies",
    "ListenerTraffic",
    "RuleTraffic",
    "TrafficPolicies",
    "backend_configs",
    "listener_policies",
    "policy_target_warnings",
    "traffic_policies",
]

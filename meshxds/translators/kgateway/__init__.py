"""kgateway (``gateway.kgateway.dev``) → IR: what kgateway adds to Gateway API: listener policies
(HTTPListenerPolicy, ListenerPolicy, ``policies.py``) and cluster policies (BackendConfigPolicy,
``backend_config.py``).

kgateway's objects extend Gateway API ones (a policy targets a Gateway), so the Gateway API
translator calls in here; nothing here calls back into it. Its ``Backend`` kind is resolved with
every other backendRef, in the shared ``translators/backends.py``, into a cluster built by the
upstream layer (``translators/upstream``).
"""

from __future__ import annotations

from meshxds.translators.kgateway.backend_config import BackendConfigs, backend_configs
from meshxds.translators.kgateway.policies import ListenerPolicies, listener_policies, policy_target_warnings

__all__ = [
    "BackendConfigs",
    "ListenerPolicies",
    "backend_configs",
    "listener_policies",
    "policy_target_warnings",
]

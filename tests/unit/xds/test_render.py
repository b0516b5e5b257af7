"""``meshxds translate`` prints Envoy's JSON form the way the standard library would."""

from __future__ import annotations

import json

from meshxds.xds.render import dumps


def test_dumps_reads_as_the_standard_library_writes_it() -> None:
    payload = {
        "listeners": [{"name": "l", "address": {"port_value": 8080, "weights": [1, 2.5, True, None]}}],
        "routes": [],
        "b": {"z": {}, "a": 'x\ny"z'},
    }
    assert dumps(payload) == json.dumps(payload, indent=2, sort_keys=True)

"""The kinds of problem the Istio translator reports, with Istio's own analysis codes
(``istioctl analyze``, https://istio.io/latest/docs/reference/config/analysis/) where one means
the same thing, and ``MXD`` codes for what only meshxds has to say.

======================================  =============================================================
type                                    reported for
======================================  =============================================================
IST0001 InternalError                   a built proxy config that breaks an IR invariant (a bug)
IST0101 ReferencedResourceNotFound      a ``credentialName`` Secret, a destination host / port /
                                        subset, a delegate VirtualService that is not there (or not
                                        visible to the proxy); a rule left with no destination
IST0106 SchemaValidationError           what Istio's validation rejects: an HTTPS server without
                                        ``tls``, TLS without a certificate, MUTUAL without a CA, a
                                        malformed SPKI pin or certificate hash, an unknown
                                        ``grpcStatus``, a delegate with hosts or delegating again
IST0122 InvalidRegexp                   a regex RE2 (so Envoy) rejects: matches, CORS origins
IST0161 InvalidGatewayCredential        a ``credentialName`` Secret without a usable key pair
MXD0000 Unclassified                    a sentence from the upstream layer (service registry,
                                        DestinationRules), which does not report records yet
MXD0001 UnsupportedFeature              valid Istio config meshxds does not implement
                                        (``ISTIO_MUTUAL`` servers, ``http2Error``, ``MONGO`` ...)
MXD0002 ConflictingClaims               two servers, services or hosts claim one port, address or
                                        domain: the first keeps it
MXD0003 InvalidHeaderOperation          header operations Envoy refuses (that rule or destination
                                        answers 500) or a ``%`` it would misread (sent literally)
======================================  =============================================================

The level is ours, not the code's: meshxds serves what it can, so a destination that is not
found is a warning (its share of traffic answers 500), where ``istioctl analyze`` calls every
IST0101 an error.
"""

from __future__ import annotations

from meshxds.conditions import MessageType

__all__ = [
    "CONFLICTING_CLAIMS",
    "INTERNAL_ERROR",
    "INVALID_GATEWAY_CREDENTIAL",
    "INVALID_HEADER_OPERATION",
    "INVALID_REGEXP",
    "REFERENCED_RESOURCE_NOT_FOUND",
    "SCHEMA_VALIDATION_ERROR",
    "UNCLASSIFIED",
    "UNSUPPORTED_FEATURE",
]

INTERNAL_ERROR = MessageType("IST0001", "InternalError")
REFERENCED_RESOURCE_NOT_FOUND = MessageType("IST0101", "ReferencedResourceNotFound")
SCHEMA_VALIDATION_ERROR = MessageType("IST0106", "SchemaValidationError")
INVALID_REGEXP = MessageType("IST0122", "InvalidRegexp")
INVALID_GATEWAY_CREDENTIAL = MessageType("IST0161", "InvalidGatewayCredential")
UNCLASSIFIED = MessageType("MXD0000", "Unclassified")
UNSUPPORTED_FEATURE = MessageType("MXD0001", "UnsupportedFeature")
CONFLICTING_CLAIMS = MessageType("MXD0002", "ConflictingClaims")
INVALID_HEADER_OPERATION = MessageType("MXD0003", "InvalidHeaderOperation")

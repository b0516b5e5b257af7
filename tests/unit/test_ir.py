"""``ir.ProxyConfig.validate``: what Envoy would reject is reported, so it is never served."""

from __future__ import annotations

from meshxds import ir

BACKENDS = (ir.WeightedCluster(cluster="c", weight=1),)


def _chain(name: str, ranges: tuple[str, ...] = (), server_names: tuple[str, ...] = ()) -> ir.FilterChain:
    return ir.FilterChain(
        name=name, destination_ranges=ranges, server_names=server_names, tcp_backends=BACKENDS
    )


def _problems(*chains: ir.FilterChain) -> list[str]:
    listener = ir.Listener(name="l", address="0.0.0.0", port=1, chains=chains, stat_prefix="l")
    return ir.ProxyConfig(listeners=(listener,), clusters=(ir.Cluster(name="c"),)).validate()


def test_two_chains_matching_one_destination_are_reported() -> None:
    # Envoy rejects the whole listener ("has the same matching rules defined").
    assert _problems(_chain("a", ("10.0.0.1", "10.0.0.2")), _chain("b", ("10.0.0.2",))) == [
        "listener l: chains a and b both match 10.0.0.2"
    ]


def test_two_chains_matching_one_server_name_are_reported() -> None:
    assert _problems(_chain("x", server_names=("a.example",)), _chain("y", server_names=("a.example",))) == [
        "listener l: chains x and y both match a.example"
    ]


def test_distinct_matches_and_one_default_chain_are_fine() -> None:
    chains = (
        _chain("a", ("10.0.0.1",)),
        _chain("b", ("10.0.0.2",)),
        _chain("s", ("10.0.0.1",), ("a.example",)),
        _chain("default"),
    )
    assert _problems(*chains) == []

"""The NetworkPolicies allow exactly the calls the code makes, and nothing else.

The call graph comes from the services' own configuration: each config class is loaded with a
development environment in which every peer's address (CONFIDANT_<PEER>_ADDR) is a distinct
sentinel; wherever a sentinel turns up in the loaded config (the ``*_target`` settings, web's
``targets``), that service calls that peer. A new client in the code without a policy, or a
policy without a client, fails here.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from collections.abc import Mapping

import pytest

from services.common.config import Env
from tests.deploy import k8s

CONFIG_CLASSES = {
    "auth": ("services.auth.config", "AuthConfig"),
    "messaging": ("services.messaging.config", "MessagingConfig"),
    "consent": ("services.consent.config", "ConsentConfig"),
    "notify": ("services.notify.config", "NotifyConfig"),
    "web": ("services.web.config", "WebConfig"),
}
DATABASE_LABEL = "confidant.io/database-of"
DATABASE_PORT = 5432


def _sentinel(peer: str) -> str:
    return f"{peer}.sentinel.invalid:1"


def _values(value, depth: int = 0):
    """Every scalar inside a loaded config (dataclasses, mappings, sequences)."""
    if depth > 5:
        return
    if dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            yield from _values(getattr(value, field.name), depth + 1)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _values(item, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _values(item, depth + 1)
    else:
        yield value


def code_call_graph(tmp_path) -> set[tuple[str, str]]:
    env = {"CONFIDANT_MODE": "development", "CONFIDANT_KEYS_DIR": str(tmp_path)}
    for service in k8s.GRPC_SERVICES:
        env[f"CONFIDANT_{service.upper()}_ADDR"] = _sentinel(service)
        env[f"CONFIDANT_{service.upper()}_DATABASE_URL"] = f"postgresql://unused.invalid/{service}"
    edges = set()
    for service, (module, name) in CONFIG_CLASSES.items():
        config = getattr(importlib.import_module(module), name).load(Env(env))
        found = set(_values(config))
        edges |= {(service, peer) for peer in k8s.GRPC_SERVICES if _sentinel(peer) in found}
    return edges


def _port_matches(rule_ports: list[dict] | None, port: int, port_name: str) -> bool:
    if not rule_ports:
        return True  # no ports: every port
    return any(p.get("port") in (port, port_name) and p.get("protocol", "TCP") == "TCP" for p in rule_ports)


def _same_namespace_pods(peer: dict) -> dict | None:
    """The podSelector of a peer that means "pods in this namespace", else None."""
    if "namespaceSelector" in peer or "ipBlock" in peer:
        return None
    return peer.get("podSelector")


def policy_graph(docs: list[dict]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(egress edges, ingress edges) between the services' pods on the callee's gRPC port."""
    pods = k8s.pod_labels(docs)
    grpc_ports = {s: k8s.grpc_port(d) for d in k8s.of_kind(docs, "Deployment")
                  if (s := d["metadata"]["name"]) in k8s.GRPC_SERVICES}
    egress, ingress = set(), set()
    for policy in k8s.of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        selected = [s for s, labels in pods.items() if k8s.selector_matches(spec["podSelector"], labels)]
        for source in selected:
            for rule in spec.get("egress") or []:
                for target, port in grpc_ports.items():
                    if not _port_matches(rule.get("ports"), port, "grpc"):
                        continue
                    peers = rule.get("to")
                    if not peers or any(k8s.selector_matches(_same_namespace_pods(p), pods[target]) for p in peers):
                        egress.add((source, target))
        for target in selected:
            if target not in grpc_ports:
                continue
            for rule in spec.get("ingress") or []:
                if not _port_matches(rule.get("ports"), grpc_ports[target], "grpc"):
                    continue
                peers = rule.get("from")
                for source, labels in pods.items():
                    if not peers or any(k8s.selector_matches(_same_namespace_pods(p), labels) for p in peers):
                        ingress.add((source, target))
    egress.discard(("web", "web"))
    return {e for e in egress if e[0] != e[1]}, {e for e in ingress if e[0] != e[1]}


@pytest.fixture(scope="module")
def code_graph(tmp_path_factory) -> set[tuple[str, str]]:
    graph = code_call_graph(tmp_path_factory.mktemp("keys"))
    # The derivation itself must see something: web reaches every gRPC service.
    assert {("web", s) for s in k8s.GRPC_SERVICES} <= graph, graph
    return graph


@pytest.mark.parametrize("overlay", ["base", *k8s.OVERLAYS])
def test_policies_allow_exactly_the_calls_the_code_makes(rendered, code_graph, overlay):
    egress, ingress = policy_graph(rendered[overlay])
    assert egress == code_graph, (
        f"egress allowed but never called: {sorted(egress - code_graph)}; "
        f"called but not allowed out: {sorted(code_graph - egress)}"
    )
    assert ingress == code_graph, (
        f"ingress allowed but never called: {sorted(ingress - code_graph)}; "
        f"called but not allowed in: {sorted(code_graph - ingress)}"
    )


def test_a_missing_or_extra_policy_is_noticed(rendered, code_graph):
    """The comparison above is not vacuous: dropping one allowed call, or adding one, changes the graph."""
    docs = copy.deepcopy(rendered["base"])
    notify = k8s.named(docs, "NetworkPolicy", "notify")
    notify["spec"]["egress"] = [r for r in notify["spec"]["egress"]
                                if not any(k8s.selector_matches(p.get("podSelector"), {k8s.NAME_LABEL: "consent"})
                                           for p in r["to"])]
    egress, _ = policy_graph(docs)
    assert code_graph - egress == {("notify", "consent")}

    docs = copy.deepcopy(rendered["base"])
    consent = k8s.named(docs, "NetworkPolicy", "consent")
    consent["spec"]["egress"].append({"to": [{"podSelector": {"matchLabels": {k8s.NAME_LABEL: "messaging"}}}],
                                      "ports": [{"protocol": "TCP", "port": 50052}]})
    egress, _ = policy_graph(docs)
    assert egress - code_graph == {("consent", "messaging")}


@pytest.mark.parametrize("overlay", ["base", *k8s.OVERLAYS])
def test_everything_is_denied_unless_allowed(rendered, overlay):
    policies = k8s.of_kind(rendered[overlay], "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "a default-deny NetworkPolicy (every pod, Ingress and Egress, no rules) is needed"
    # Every namespaced object sits in the same namespace as that policy.
    namespaces = {d["metadata"].get("namespace") for d in rendered[overlay] if d["kind"] != "Namespace"}
    assert namespaces == {deny[0]["metadata"]["namespace"]}


def _egress_rules_of(docs: list[dict], service: str) -> list[dict]:
    labels = k8s.pod_labels(docs)[service]
    return [rule for p in k8s.of_kind(docs, "NetworkPolicy") if k8s.selector_matches(p["spec"]["podSelector"], labels)
            for rule in p["spec"].get("egress") or []]


@pytest.mark.parametrize("overlay", ["base", *k8s.OVERLAYS])
def test_dns_metrics_and_the_ingress_controller(rendered, overlay):
    docs = rendered[overlay]
    pods = k8s.pod_labels(docs)
    for service in k8s.SERVICES:
        dns = [r for r in _egress_rules_of(docs, service)
               if any(p.get("podSelector", {}).get("matchLabels", {}).get("k8s-app") == "kube-dns"
                      for p in r.get("to", []))]
        assert dns and {(p["protocol"], p["port"]) for p in dns[0]["ports"]} == {("UDP", 53), ("TCP", 53)}, service
        scraped = [p for p in k8s.of_kind(docs, "NetworkPolicy")
                   if k8s.selector_matches(p["spec"]["podSelector"], pods[service])
                   for rule in p["spec"].get("ingress") or []
                   if any(f.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                          == "monitoring" for f in rule["from"])
                   and [port["port"] for port in rule["ports"]] == ["metrics"]]
        assert scraped, f"{service}: Prometheus in the monitoring namespace may scrape the metrics port"
    web = k8s.named(docs, "NetworkPolicy", "web")["spec"]["ingress"]
    controller = [r for r in web if r["from"][0].get("namespaceSelector", {}).get("matchLabels", {})
                  .get("kubernetes.io/metadata.name") == "ingress-nginx"]
    assert controller and controller[0]["ports"] == [{"protocol": "TCP", "port": "http"}]


def _database_targets(docs: list[dict], service: str) -> list[dict]:
    """The egress peers of a service on PostgreSQL's port."""
    return [peer for rule in _egress_rules_of(docs, service)
            if _port_matches(rule.get("ports"), DATABASE_PORT, "postgresql") and rule.get("to")
            for peer in rule["to"]]


@pytest.mark.parametrize("overlay", ["base", "dev"])
def test_each_service_reaches_its_own_database_only(rendered, overlay):
    docs = rendered[overlay]
    for service in k8s.GRPC_SERVICES:
        labels = [p["podSelector"]["matchLabels"] for p in _database_targets(docs, service)]
        assert labels == [{DATABASE_LABEL: service}], f"{service} reaches databases {labels}"
    assert _database_targets(docs, "web") == [], "web owns no database"


def test_dev_databases_admit_only_their_service(rendered):
    docs = rendered["dev"]
    pods = k8s.pod_labels(docs)
    for service in k8s.GRPC_SERVICES:
        cluster = k8s.named(docs, "Cluster", f"{service}-db")
        assert cluster["spec"]["inheritedMetadata"]["labels"] == {DATABASE_LABEL: service}
        policy = k8s.named(docs, "NetworkPolicy", f"{service}-db")
        assert policy["spec"]["podSelector"] == {"matchLabels": {"cnpg.io/cluster": f"{service}-db"}}
        admitted = {s for rule in policy["spec"]["ingress"] for peer in rule["from"]
                    for s, labels in pods.items() if k8s.selector_matches(_same_namespace_pods(peer), labels)}
        assert admitted == {service}, f"{service}-db admits {admitted}"


def test_prod_databases_are_addresses_on_the_postgresql_port(rendered):
    docs = rendered["prod"]
    for service in k8s.GRPC_SERVICES:
        targets = _database_targets(docs, service)
        assert targets and all(set(t) == {"ipBlock"} for t in targets), f"{service}: {targets}"
        assert not any(DATABASE_LABEL in str(t) for t in targets)

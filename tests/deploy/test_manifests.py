"""deploy/: every overlay renders, validates against Kubernetes 1.32's schemas, passes checkov
(but for deploy/checkov-skips.yaml's explained entries), keeps the workload rules, and gives each
service a configuration its own loader accepts, with the keys and files mounted where it reads them."""

from __future__ import annotations

import ast
import base64
import datetime
import fnmatch
import importlib
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.common.config import ConfigError, Env
from services.common.keyfiles import load_key_file
from services.common.tokens import TokenSigner, TokenVerifier
from tests.deploy import k8s
from tests.deploy.test_networkpolicies import CONFIG_CLASSES

HPA_SERVICES = {"web", "messaging", "notify"}
AWS_SERVICES = {"messaging", "notify", "consent"}  # KMS; SES and SNS; SNS
ROLE_ARN = re.compile(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+")
MODES = {"dev": "development", "prod": "production"}
# libpq reads these itself (the server certificate's verification).
LIBPQ_SETTINGS = {"PGSSLMODE", "PGSSLROOTCERT"}
# Settings the manifests set for runtime features of this issue that the lead is adding to the
# services (TLS on gRPC, the plain-text health port for the kubelet's gRPC probes). Remove a
# name here once the code reads it; then the test checks it like any other.
PENDING_SETTINGS: set[str] = set()
# Secrets the production operator creates (deploy/README.md says how); deploy/make-secrets.sh
# creates the rest, and CloudNativePG each dev cluster's <cluster>-app and <cluster>-ca.
OPERATOR_SECRETS = {
    "confidant-database-ca", "confidant-web-tls",
    *(f"confidant-{s}-database" for s in k8s.GRPC_SERVICES),
    *(f"confidant-{s}-grpc-tls" for s in k8s.SERVICES),
}


# ------------------------------------------------------------------ schemas and scanners

VALIDATE = """
import json, sys
import kubernetes_validate as kv
request = json.load(sys.stdin)
results = []
for doc in request["docs"]:
    try:
        results.append(["ok", kv.validate(doc, request["version"], strict=True)])
    except kv.ValidationError as exc:
        results.append(["invalid", str(exc)])
    except kv.SchemaNotFoundError as exc:
        results.append(["no schema", str(exc)])
print(json.dumps(results))
"""


def test_every_object_matches_the_kubernetes_schemas(rendered, tools_venv):
    """kubernetes-validate, strict (no unknown fields), against 1.32; one broken object must fail."""
    docs, names = [], []
    for overlay in ("base", *k8s.OVERLAYS):
        for doc in rendered[overlay]:
            if (doc["apiVersion"], doc["kind"]) not in k8s.CUSTOM_KINDS:
                docs.append(doc)
                names.append(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}")
    broken = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    result = k8s.run_tool("python", "-c", VALIDATE,
                          stdin=json.dumps({"docs": [*docs, broken], "version": k8s.KUBERNETES_VERSION}))
    assert result.returncode == 0, result.stderr
    *verdicts, control = json.loads(result.stdout)
    assert control[0] == "invalid", f"the validator accepted a broken object: {control}"
    problems = [f"{name}: {verdict}" for name, verdict in zip(names, verdicts, strict=True)
                if verdict != ["ok", "1.32"]]
    assert not problems, "\n".join(problems)


def test_cloudnativepg_clusters_have_the_expected_shape(rendered):
    """No schema ships for CloudNativePG's Cluster: its shape is checked here, and tied to the
    secrets the Deployments read (<cluster>-app, <cluster>-ca)."""
    clusters = k8s.of_kind(rendered["dev"], "Cluster")
    assert sorted(c["metadata"]["name"] for c in clusters) == sorted(f"{s}-db" for s in k8s.GRPC_SERVICES)
    assert not k8s.of_kind(rendered["prod"], "Cluster"), "prod's databases are outside the cluster"
    for cluster in clusters:
        service = cluster["metadata"]["name"].removesuffix("-db")
        spec = cluster["spec"]
        assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
        assert set(spec) <= {"instances", "inheritedMetadata", "bootstrap", "storage", "resources"}, set(spec)
        assert isinstance(spec["instances"], int) and spec["instances"] >= 1
        assert re.fullmatch(r"\d+(Mi|Gi|Ti)", spec["storage"]["size"])
        initdb = spec["bootstrap"]["initdb"]
        assert initdb["database"] == initdb["owner"] == f"confidant_{service}"
        role = f"confidant_{service}_app"
        if service in ("auth", "consent"):  # their queries run as an application role
            assert initdb["postInitApplicationSQL"] == [f"CREATE ROLE {role} NOLOGIN",
                                                        f"GRANT {role} TO confidant_{service}"]
        volumes = {v["name"]: v for v in k8s.named(rendered["dev"], "Deployment", service)
                   ["spec"]["template"]["spec"]["volumes"]}
        assert volumes["database"]["secret"]["secretName"] == f"{service}-db-app"
        assert volumes["database"]["secret"]["items"] == [{"key": "uri", "path": "url"}]
        assert volumes["database-ca"]["secret"]["secretName"] == f"{service}-db-ca"


def test_checkov_findings_are_all_explained(rendered, tools_venv, tmp_path):
    skips = yaml.safe_load((k8s.DEPLOY / "checkov-skips.yaml").read_text())
    for skip in skips:
        assert set(skip) == {"check", "overlays", "resources", "reason"}, skip
        assert len(skip["reason"].split()) >= 10, f"{skip['check']}: say why it is accepted"
    for overlay in k8s.OVERLAYS:
        (tmp_path / f"{overlay}.yaml").write_text(yaml.safe_dump_all(rendered[overlay]))
    failed = k8s.checkov(tmp_path, "kubernetes")
    used, unexplained = set(), []
    for finding in failed:
        overlay = Path(finding["file_path"]).stem
        matching = [i for i, s in enumerate(skips) if s["check"] == finding["check_id"] and overlay in s["overlays"]
                    and any(fnmatch.fnmatchcase(finding["resource"], p) for p in s["resources"])]
        used |= set(matching)
        if not matching:
            unexplained.append(f"{overlay}: {finding['check_id']} {finding['check_name']} ({finding['resource']})")
    assert not unexplained, "checkov findings not in deploy/checkov-skips.yaml:\n" + "\n".join(unexplained)
    stale = [skips[i]["check"] for i in range(len(skips)) if i not in used]
    assert not stale, f"deploy/checkov-skips.yaml entries that match no finding any more: {stale}"


# ------------------------------------------------------------------ the workload rules


@pytest.mark.parametrize("overlay", ["base", *k8s.OVERLAYS])
def test_every_service_has_its_objects(rendered, overlay):
    docs = rendered[overlay]
    pods = k8s.pod_labels(docs)
    assert sorted(pods) == sorted(k8s.SERVICES)
    for service in k8s.SERVICES:
        deployment = k8s.named(docs, "Deployment", service)
        spec = k8s.container(deployment)
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
        # A Service whose main port is named grpc (web: http) and reaches the container's port.
        kube_service = k8s.named(docs, "Service", service)
        assert k8s.selector_matches({"matchLabels": kube_service["spec"]["selector"]}, pods[service])
        main = "http" if service == "web" else "grpc"
        service_ports = {p["name"]: p for p in kube_service["spec"]["ports"]}
        assert service_ports[main]["targetPort"] == main and main in ports
        assert service_ports["metrics"]["targetPort"] == "metrics" and "metrics" in ports
        # A ServiceAccount without a token; IAM roles only where AWS is called.
        account = k8s.named(docs, "ServiceAccount", service)
        assert account["automountServiceAccountToken"] is False
        annotations = account["metadata"].get("annotations", {})
        if service in AWS_SERVICES:
            assert ROLE_ARN.fullmatch(annotations.get("eks.amazonaws.com/role-arn", "")), (service, annotations)
        else:
            assert "eks.amazonaws.com/role-arn" not in annotations, service
        # A PodDisruptionBudget; HorizontalPodAutoscalers own the replica count where they exist.
        budget = k8s.named(docs, "PodDisruptionBudget", service)
        assert k8s.selector_matches(budget["spec"]["selector"], pods[service])
        autoscalers = [h for h in k8s.of_kind(docs, "HorizontalPodAutoscaler")
                       if h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                          "name": service}]
        if service in HPA_SERVICES:
            assert len(autoscalers) == 1 and "replicas" not in deployment["spec"], service
            assert 1 <= autoscalers[0]["spec"]["minReplicas"] <= autoscalers[0]["spec"]["maxReplicas"]
        else:
            assert not autoscalers and deployment["spec"]["replicas"] >= 1, service
    assert len(k8s.of_kind(docs, "HorizontalPodAutoscaler")) == len(HPA_SERVICES)


@pytest.mark.parametrize("overlay", ["base", *k8s.OVERLAYS])
def test_pods_are_locked_down(rendered, overlay):
    docs = rendered[overlay]
    namespace = k8s.of_kind(docs, "Namespace")
    assert [n["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] for n in namespace] == ["restricted"]
    for deployment in k8s.of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == name
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        volumes = {v["name"]: v for v in pod["volumes"]}
        for spec in k8s.all_containers(deployment):  # the migrate init containers too
            where = f"{name}/{spec['name']}"
            security = spec["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]} and not security.get("privileged"), where
            assert security.get("runAsNonRoot", True) is True and security.get("runAsUser", 10001) >= 10000, where
            tmp = [m for m in spec["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: a writable /tmp"
            assert all(m.get("readOnly") for m in spec["volumeMounts"] if m["mountPath"] != "/tmp"), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(spec["resources"][kind]), f"{where}: {kind}"


@pytest.mark.parametrize("overlay", ["base", *k8s.OVERLAYS])
def test_probes_and_shutdown(rendered, overlay):
    docs = rendered[overlay]
    for deployment in k8s.of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        spec = k8s.container(deployment)
        ports = {p["containerPort"] for p in spec["ports"]}
        probes = {kind: spec[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        if name == "web":
            paths = {kind: (p["httpGet"]["path"], p["httpGet"]["port"]) for kind, p in probes.items()}
            assert paths == {"startupProbe": ("/healthz", "http"), "livenessProbe": ("/healthz", "http"),
                             "readinessProbe": ("/readyz", "http")}
        else:
            # The kubelet's native gRPC probes (grpc.health.v1) on a port the container declares.
            assert all(set(p) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"} for p in probes.values())
            assert all(p["grpc"]["port"] in ports for p in probes.values()), name
        env = k8s.container_env(docs, deployment)
        pause = spec["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = float(env["CONFIDANT_SHUTDOWN_GRACE_SECONDS"])
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= pause + grace + 5, name


@pytest.mark.parametrize("overlay", ["base", *k8s.OVERLAYS])
def test_migrations_run_first_in_an_init_container(rendered, overlay):
    """Each gRPC service's pod first runs ``python -m services.<name> migrate`` in an init container
    of the same image, with the main container's settings and mounts for its database."""
    docs = rendered[overlay]
    web = k8s.named(docs, "Deployment", "web")["spec"]["template"]["spec"]
    assert "initContainers" not in web, "web owns no database"
    for service in k8s.GRPC_SERVICES:
        deployment = k8s.named(docs, "Deployment", service)
        main, migrate = k8s.container(deployment), k8s.migrate_container(deployment)
        assert main["args"] == [f"services.{service}"]
        assert migrate["args"] == [f"services.{service}", "migrate"]
        for field in ("image", "imagePullPolicy", "envFrom", "securityContext"):
            assert migrate[field] == main[field], f"{overlay}: {service}'s migrate container: {field}"
        # It serves nothing: no ports, probes or shutdown hook.
        assert not set(migrate) & {"ports", "startupProbe", "livenessProbe", "readinessProbe", "lifecycle"}
        env, main_env = k8s.container_env(docs, deployment, migrate), k8s.container_env(docs, deployment)
        database = {f"CONFIDANT_{service.upper()}_DATABASE_URL_FILE", *LIBPQ_SETTINGS}
        assert database <= set(env), f"{overlay}: {service}'s migrate container: {database - set(env)}"
        assert env.items() <= main_env.items(), f"{overlay}: {service}: the main container's settings, no others"
        mounts = {m["mountPath"]: m for m in migrate["volumeMounts"]}
        assert mounts.items() <= {m["mountPath"]: m for m in main["volumeMounts"]}.items()
        for variable in database - {"PGSSLMODE"}:
            assert any(env[variable].startswith(path + "/") for path in mounts), f"{service}: {variable}"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_the_ingress_serves_the_public_url_over_tls(rendered, overlay):
    docs = rendered[overlay]
    (ingress,) = k8s.of_kind(docs, "Ingress")
    public = urlsplit(k8s.container_env(docs, k8s.named(docs, "Deployment", "web"))["CONFIDANT_PUBLIC_URL"])
    assert public.scheme == "https"
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts == [public.hostname] and ingress["spec"]["tls"] == [{"hosts": hosts, "secretName": "confidant-web-tls"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "web", "port": {"name": "http"}}


# ------------------------------------------------------------------ configuration


def _settings_the_code_reads() -> tuple[set[str], set[str]]:
    """(names, per-service suffixes) of the CONFIDANT_ settings in services/: string constants
    such as "MESSAGING_KMS_KEY_ID", and f-string endings such as f"{upper}_LISTEN"."""
    names, suffixes = set(), set()
    for path in (k8s.REPO / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value):
                    names.add(node.value)
            elif isinstance(node, ast.JoinedStr) and len(node.values) == 2:
                head, tail = node.values
                if (isinstance(head, ast.FormattedValue) and isinstance(tail, ast.Constant)
                        and re.fullmatch(r"_[A-Z0-9_]+", str(tail.value))):
                    suffixes.add(tail.value)
    return names, suffixes


@pytest.mark.parametrize("overlay", ["base", *k8s.OVERLAYS])
def test_every_setting_is_one_the_code_reads(rendered, overlay):
    names, suffixes = _settings_the_code_reads()
    assert {"MODE", "PUBLIC_URL", "MESSAGING_KMS_KEY_ID"} <= names and {"_LISTEN", "_ADDR"} <= suffixes

    def known(setting: str) -> bool:
        service, _, rest = setting.partition("_")
        per_service = service.lower() in k8s.SERVICES and f"_{rest}" in suffixes
        return setting in names or per_service or setting in PENDING_SETTINGS

    docs = rendered[overlay]
    unknown = set()
    for deployment, spec in ((d, s) for d in k8s.of_kind(docs, "Deployment") for s in k8s.all_containers(d)):
        for variable in k8s.container_env(docs, deployment, spec):
            if variable in LIBPQ_SETTINGS:
                continue
            assert variable.startswith("CONFIDANT_"), variable
            setting = variable.removeprefix("CONFIDANT_")
            if not (known(setting) or (setting.endswith("_FILE") and known(setting.removesuffix("_FILE")))):
                unknown.add(variable)
    assert not unknown, f"set in deploy/ but read nowhere in services/: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", ["base", *k8s.OVERLAYS])
def test_addresses_and_ports_agree(rendered, overlay):
    docs = rendered[overlay]
    for deployment in k8s.of_kind(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        env = k8s.container_env(docs, deployment)
        ports = {p["name"]: p["containerPort"] for p in k8s.container(deployment)["ports"]}
        main = "http" if name == "web" else "grpc"
        assert env[f"CONFIDANT_{name.upper()}_LISTEN"] == f"0.0.0.0:{ports[main]}"
        assert env[f"CONFIDANT_{name.upper()}_METRICS_LISTEN"] == f"0.0.0.0:{ports['metrics']}"
        if name != "web":  # web owns no database
            assert env["PGSSLMODE"] == "verify-full", name
        for peer in k8s.GRPC_SERVICES:
            host, _, port = env[f"CONFIDANT_{peer.upper()}_ADDR"].rpartition(":")
            service_port = next(p for p in k8s.named(docs, "Service", host)["spec"]["ports"] if p["name"] == "grpc")
            assert int(port) == service_port["port"] == k8s.grpc_port(k8s.named(docs, "Deployment", peer))


# ------------------------------------------------------------------ secrets, mounts, and the loaders


def _run_make_secrets(directory: Path, *flags: str) -> dict[str, dict[str, bytes]]:
    result = subprocess.run([str(k8s.DEPLOY / "make-secrets.sh"), *flags, str(directory)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    store = {}
    for doc in yaml.safe_load_all((directory / "secrets.yaml").read_text()):
        if not doc:
            continue
        assert doc["metadata"]["namespace"] == "confidant"
        if doc["kind"] == "Secret":
            store[doc["metadata"]["name"]] = {k: base64.b64decode(v) for k, v in doc["data"].items()}
        else:
            store[doc["metadata"]["name"]] = {k: v.encode() for k, v in doc["data"].items()}
    return store


def _certificate(names: list[str]) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem_key


@pytest.fixture(scope="module")
def secret_stores(tmp_path_factory) -> dict[str, dict[str, dict[str, bytes]]]:
    """Per overlay, every Secret and ConfigMap its pods mount, by name, as the cluster would hold
    them: make-secrets.sh's output, plus what CloudNativePG (dev) or the operator (prod) creates."""
    ca, _ = _certificate(["test-ca"])
    dev = _run_make_secrets(tmp_path_factory.mktemp("secrets") / "dev", "--dev")
    for service in k8s.GRPC_SERVICES:
        dev[f"{service}-db-app"] = {"uri": f"postgresql://confidant_{service}:pw@{service}-db-rw.confidant:5432/"
                                           f"confidant_{service}".encode()}
        dev[f"{service}-db-ca"] = {"ca.crt": ca}
    prod = _run_make_secrets(tmp_path_factory.mktemp("secrets") / "prod")
    assert not {"confidant-messaging-data-key", "confidant-web-tls"} & set(prod), "those are development's"
    made = set(prod)
    for service in k8s.GRPC_SERVICES:
        prod[f"confidant-{service}-database"] = {
            "url": f"postgresql://{service}:pw@{service}.db.example.com:5432/confidant_{service}"
                   "?sslmode=verify-full".encode()}
    prod["confidant-database-ca"] = {"ca.crt": ca}
    for service in k8s.SERVICES:
        cert, key = _certificate([service, f"{service}.confidant", f"{service}.confidant.svc"])
        prod[f"confidant-{service}-grpc-tls"] = {"tls.crt": cert, "tls.key": key, "ca.crt": ca}
    prod["confidant-web-tls"] = dict(zip(("tls.crt", "tls.key"), _certificate(["confidant.example.com"]), strict=True))
    assert set(prod) - made == OPERATOR_SECRETS
    return {"dev": dev, "prod": prod}


def _mount(docs: list[dict], deployment: dict, store: dict, root: Path, spec: dict | None = None) -> dict[str, str]:
    """Write the volumes the Deployment's container (or ``spec``, one of its init containers)
    mounts under root as the kubelet would, and return its environment with the mount paths
    moved there."""
    spec = spec or k8s.container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    generated = {c["metadata"]["name"]: {k: v.encode() for k, v in c["data"].items()}
                 for c in k8s.of_kind(docs, "ConfigMap")}
    moved = {}
    for mount in spec["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = root / mount["name"]
        target.mkdir(parents=True)
        if "projected" in volume:
            sources = [s.get("secret") or s.get("configMap") for s in volume["projected"]["sources"]]
            sources = [(s["name"], s.get("items")) for s in sources]
        elif "secret" in volume:
            sources = [(volume["secret"]["secretName"], volume["secret"].get("items"))]
        else:
            assert "emptyDir" in volume, volume
            sources = []
        for name, items in sources:
            data = store.get(name) or generated.get(name)
            assert data is not None, f"{deployment['metadata']['name']} mounts {name}, which nobody creates"
            for item in items or [{"key": k, "path": k} for k in data]:
                assert item["key"] in data, f"{name} has no key {item['key']}"
                (target / item["path"]).write_bytes(data[item["key"]])
        moved[mount["mountPath"]] = target
    env = k8s.container_env(docs, deployment, spec)
    for variable, value in env.items():
        for path, target in moved.items():
            if value == path or value.startswith(path + "/"):
                env[variable] = str(target) + value[len(path):]
    return env


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_each_service_accepts_its_configuration(rendered, secret_stores, overlay, tmp_path):
    """The services' own loaders, in the overlay's mode, on the overlay's settings and mounted files."""
    docs = rendered[overlay]
    for service, (module, name) in CONFIG_CLASSES.items():
        deployment = k8s.named(docs, "Deployment", service)
        env = _mount(docs, deployment, secret_stores[overlay], tmp_path / service)
        for variable, value in env.items():
            if variable.endswith("_FILE") or variable == "PGSSLROOTCERT":
                assert Path(value).is_file(), f"{service}: {variable} points at {value}, which is not mounted"
        config = getattr(importlib.import_module(module), name).load(Env(env))
        common = getattr(config, "common", config)
        assert common.mode == MODES[overlay]
        keys = Path(env["CONFIDANT_KEYS_DIR"])
        TokenSigner.from_keys_dir(keys, service).service_token()
        if service != "web":
            verifier = TokenVerifier.from_keys_dir(keys)
            assert sorted(p.stem for p in keys.glob("*.pub")) == sorted(k8s.SERVICES)
            assert sorted(p.name for p in keys.glob("*.key")) == sorted(
                {f"{service}.key"} | ({"auth-mfa.key"} if service == "auth" else set())
                | ({"messaging-data.key"} if service == "messaging" and overlay == "dev" else set()))
            token, _ = TokenSigner.from_keys_dir(keys, service).service_token()
            assert verifier is not None and token
            url = (Path(env[f"CONFIDANT_{service.upper()}_DATABASE_URL_FILE"])).read_text().strip()
            assert common.database_url == url
        else:
            assert [p.name for p in keys.iterdir()] == ["web.key"], "web holds only its own key"
    if overlay == "prod":
        messaging = k8s.container_env(docs, k8s.named(docs, "Deployment", "messaging"))
        assert messaging["CONFIDANT_MESSAGING_KMS_KEY_ID"], "production wraps message keys with AWS KMS"


@pytest.mark.parametrize("overlay", k8s.OVERLAYS)
def test_each_migrate_container_accepts_its_configuration(rendered, secret_stores, overlay, tmp_path):
    """``migrate`` loads the service's whole configuration first, production refusals included
    (development keys, plaintext gRPC, sslmode): the init container's own settings and mounts
    must pass them, or the pod never starts."""
    docs = rendered[overlay]
    for service in k8s.GRPC_SERVICES:
        module, name = CONFIG_CLASSES[service]
        load = getattr(importlib.import_module(module), name).load
        deployment = k8s.named(docs, "Deployment", service)
        migrate = k8s.migrate_container(deployment)
        env = _mount(docs, deployment, secret_stores[overlay], tmp_path / service, migrate)
        for variable, value in env.items():
            if variable.endswith("_FILE") or variable == "PGSSLROOTCERT":
                assert Path(value).is_file(), f"{service}: {variable} points at {value}, which is not mounted"
        common = load(Env(env)).common
        assert common.mode == MODES[overlay]
        url = Path(env[f"CONFIDANT_{service.upper()}_DATABASE_URL_FILE"]).read_text().strip()
        assert common.database_url == url
        assert (common.grpc_tls is not None) == (overlay == "prod")
        if overlay == "prod":
            # The control: without the gRPC TLS files production refuses to load at all.
            bare = {**migrate, "volumeMounts": [m for m in migrate["volumeMounts"] if m["name"] != "grpc-tls"]}
            with pytest.raises(ConfigError, match="GRPC_TLS_CERT_FILE points at"):
                load(Env(_mount(docs, deployment, secret_stores[overlay], tmp_path / f"{service}-bare", bare)))


def test_make_secrets_keys_are_what_the_services_load(secret_stores, tmp_path):
    dev = secret_stores["dev"]
    public = dev["confidant-token-public-keys"]
    for service in k8s.SERVICES:
        (tmp_path / f"{service}.pub").write_bytes(public[f"{service}.pub"])
    for service in k8s.SERVICES:
        (tmp_path / f"{service}.key").write_bytes(dev[f"confidant-{service}-token-key"][f"{service}.key"])
        token, _ = TokenSigner.from_keys_dir(tmp_path, service).service_token()
        assert TokenVerifier.from_keys_dir(tmp_path).verify(token).subject == f"service:{service}"
    for secret, key in (("confidant-auth-mfa-key", "auth-mfa.key"), ("confidant-messaging-data-key",
                                                                      "messaging-data.key")):
        (tmp_path / key).write_bytes(dev[secret][key])
        assert len(load_key_file(tmp_path / key, 32, key, False, ValueError)) == 32
    # Every run makes new keys.
    assert dev["confidant-auth-token-key"] != secret_stores["prod"]["confidant-auth-token-key"]


def test_the_readme_names_every_secret_the_operator_creates():
    readme = (k8s.DEPLOY / "README.md").read_text()
    for secret in sorted(OPERATOR_SECRETS):
        generic = re.sub(r"confidant-(auth|messaging|consent|notify|web)-", "confidant-<service>-", secret)
        assert secret in readme or generic in readme, f"deploy/README.md does not say how to create {secret}"
    for setting in ("CONFIDANT_MESSAGING_KMS_KEY_ID", "kubectl apply -k deploy/overlays/prod", "make-secrets.sh"):
        assert setting in readme

"""The deployment files, checked without Docker or a cluster: deploy/kubernetes against
Kubernetes' own schemas (kubernetes-validate), and the Dockerfile and the manifests against
the code they run (the torch pin, the `tether serve` command line, the health service)."""

from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import tether
import yaml
from conftest import ROOT
from tether import cli, connection
from tether_server import serve

# The oldest release with gRPC probes (GA in 1.27) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.27.0", "1.37.0"]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (NAME, arguments), continued lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    instructions = []
    for line in joined.splitlines():
        if line.strip():
            name, _, arguments = line.strip().partition(" ")
            instructions.append((name.upper(), arguments.strip()))
    return instructions


def arguments_of(name: str) -> list[str]:
    return [arguments for instruction, arguments in dockerfile() if instruction == name]


def resources() -> dict[str, dict]:
    """Every resource in deploy/kubernetes by kind."""
    found = {}
    for path in MANIFESTS:
        for resource in yaml.safe_load_all(path.read_text()):
            found[resource["kind"]] = resource
    return found


def serve_arguments(argv: list[str], monkeypatch, token: str | None):
    """`tether serve` arguments as the CLI parses them, with TETHER_TOKEN set or not."""
    if token is None:
        monkeypatch.delenv("TETHER_TOKEN", raising=False)
    else:
        monkeypatch.setenv("TETHER_TOKEN", token)
    return cli._parser().parse_args(argv)


def container_command() -> list[str]:
    """The command tini starts in the container: the image's entrypoint after `--`."""
    entrypoint = json.loads(arguments_of("ENTRYPOINT")[-1])
    assert entrypoint[:2] == ["/usr/bin/tini", "--"]
    return entrypoint[2:]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_kubernetes(version):
    assert {path.name for path in MANIFESTS} >= {"deployment.yaml", "service.yaml"}
    for path in MANIFESTS:
        for resource in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(resource, version, strict=True)


def test_base_images_are_pinned_to_exact_versions():
    images = [arguments.split()[0] for arguments in arguments_of("FROM")]
    images += re.findall(r"--from=(\S+)", " ".join(arguments_of("COPY")))
    assert images[0].startswith("nvidia/cuda:") and "-base-ubuntu" in images[0]
    for image in images:
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+(-[\w.]+)*", image), image


def test_the_image_installs_the_pinned_torch_then_the_server_extra():
    pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    runs = arguments_of("RUN")
    install_torch = f"uv pip install --constraint constraints.txt torch=={pin}"
    install_server = 'uv pip install --constraint constraints.txt ".[server]"'
    assert install_torch in runs and install_server in runs
    assert runs.index(install_torch) < runs.index(install_server)
    assert "uv venv --python 3.11 /opt/tether" in runs
    copied = [arguments.split()[0] for arguments in arguments_of("COPY")]
    assert {"constraints.txt", "pyproject.toml", "sdk", "server"} <= set(copied)


def test_the_image_runs_tether_serve_on_all_interfaces_as_a_non_root_user():
    assert container_command()[:2] == ["tether", "serve"]
    assert arguments_of("USER")[-1].split(":")[0] not in ("root", "0")
    port = connection.DEFAULT_TARGET.rsplit(":", 1)[1]
    assert arguments_of("EXPOSE") == [port]
    assert arguments_of("VOLUME") == ["/models"]


def test_the_container_serves_only_with_a_token_or_tls(monkeypatch):
    command = container_command()[1:]  # the arguments of `tether`
    args = serve_arguments(command, monkeypatch, token=None)
    assert args.host == "0.0.0.0"
    assert "refusing to listen on 0.0.0.0" in serve.check_arguments(args)
    args = serve_arguments(command, monkeypatch, token="from-a-secret")
    assert args.token == "from-a-secret" and serve.check_arguments(args) is None
    tls = ["--tls-cert", "/tls/cert.pem", "--tls-key", "/tls/key.pem"]
    assert serve.check_arguments(serve_arguments([*command, *tls], monkeypatch, None)) is None


def test_the_deployment_runs_the_image_with_a_gpu_a_token_and_time_to_drain(monkeypatch):
    pod = resources()["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"tether:{tether.__version__}"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    token = {entry["name"]: entry for entry in container["env"]}["TETHER_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "tether-token", "key": "token"}
    args = serve_arguments(container_command()[1:] + container["args"], monkeypatch, "x")
    assert serve.check_arguments(args) is None
    # Kubernetes sends SIGKILL after the grace period: the drain must end before it.
    assert pod["terminationGracePeriodSeconds"] >= args.drain_seconds + 10
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_probes_ask_the_health_service_on_the_served_port(monkeypatch):
    found = resources()
    (container,) = found["Deployment"]["spec"]["template"]["spec"]["containers"]
    args = serve_arguments(container_command()[1:] + container["args"], monkeypatch, "x")
    assert container["ports"] == [{"name": "grpc", "containerPort": args.port}]
    probes = {name: container[f"{name}Probe"] for name in ("startup", "readiness", "liveness")}
    assert all(probe["grpc"]["port"] == args.port for probe in probes.values())
    # Loading and draining are NOT_SERVING for the Tether service: readiness follows them,
    # and liveness starts only once the startup probe has seen the models loaded.
    assert probes["startup"]["grpc"]["service"] == connection.TETHER_SERVICE
    assert probes["readiness"]["grpc"]["service"] == connection.TETHER_SERVICE
    assert probes["liveness"]["grpc"].get("service", "") == ""
    startup = probes["startup"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_the_service_is_headless_over_the_deployments_pods():
    found = resources()
    service, deployment = found["Service"]["spec"], found["Deployment"]["spec"]
    assert service["clusterIP"] == "None"  # one DNS address per ready pod
    labels = deployment["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"] == [
        {"name": "grpc", "port": 50051, "targetPort": "grpc", "appProtocol": "grpc"}
    ]

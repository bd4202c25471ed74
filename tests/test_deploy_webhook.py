"""
deploy/webhook/, the admission webhook's kustomize components, checked
without a cluster: rendered by C{kubectl kustomize} beside deploy/, the
Kubernetes objects against the Kubernetes schemas, the wiring between them,
and the openssl path's certificate served by a real webhook process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.support import result_of, wait_for
from tests.test_deploy import (
    CONFIG_KEY,
    DEPLOY,
    KUBERNETES_VERSION,
    container,
    exec_form,
    kustomize,
    manifest,
)
from tests.test_docs import blocks, section
from tests.test_webhook import WebhookServer, response_of
from twisted_demo.config import parse_message
from twisted_demo.live import AdmissionWebhook, inline
from twisted_demo.live._webhook import DEFAULT_DEADLINE
from twisted_demo.options import WebhookOptions
from twisted_demo.testing import admission_review, configmap_object
from twisted_demo.webhook_tap import VALIDATE_PATH

WEBHOOK = DEPLOY / "webhook"
CERT_MANAGER = WEBHOOK / "cert-manager"
MAKE_CERT = WEBHOOK / "make-cert"

#: What the components add to deploy/'s four objects.
WEBHOOK_KINDS = [
    "Deployment",
    "PodDisruptionBudget",
    "Service",
    "ValidatingWebhookConfiguration",
]
CERT_MANAGER_KINDS = ["Certificate", "Certificate", "Issuer", "Issuer"]


def render(tmp_path: Path, *components: Path) -> list[dict[str, Any]]:
    """
    deploy/ with C{components}, from a kustomization of the user's own, as
    deploy/webhook/Kustomization says to use them.
    """
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(DEPLOY, tmp_path)],
                "components": [os.path.relpath(c, tmp_path) for c in components],
            }
        )
    )
    return kustomize(tmp_path)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("site"), WEBHOOK, CERT_MANAGER)


def webhook_objects(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """
    The webhook's own objects, by kind (the demo's have other names).
    """
    return {
        d["kind"]: d
        for d in rendered
        if d["metadata"]["name"] == "configmapdemo-webhook"
        and d["kind"] in WEBHOOK_KINDS
    }


def the_one(rendered: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [
        d for d in rendered if d["kind"] == kind and d["metadata"]["name"] == name
    ]
    return found


def webhook_container(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [only] = pod_of(objects)["containers"]
    assert isinstance(only, dict)
    return only


def pod_of(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objects["Deployment"]["spec"]["template"]["spec"]
    return spec


def mounted(
    objects: dict[str, dict[str, Any]], path: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    The webhook container's mount at C{path}, and the pod's volume it mounts.
    """
    [mount] = [
        m for m in webhook_container(objects)["volumeMounts"] if m["mountPath"] == path
    ]
    [volume] = [v for v in pod_of(objects)["volumes"] if v["name"] == mount["name"]]
    return mount, volume


def configuration(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [only] = objects["ValidatingWebhookConfiguration"]["webhooks"]
    assert isinstance(only, dict)
    return only


def test_components_add_the_webhook_and_its_certificate_to_deploy(
    rendered: list[dict[str, Any]],
) -> None:
    base = sorted(manifest(n)["kind"] for n in ("configmap.yaml", "deployment.yaml"))
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(
        [*base, "Service", "PodDisruptionBudget", *WEBHOOK_KINDS, *CERT_MANAGER_KINDS]
    )
    assert sorted(webhook_objects(rendered)) == WEBHOOK_KINDS


@pytest.mark.parametrize("with_cert_manager", [True, False])
def test_kubernetes_objects_validate_against_the_kubernetes_schema(
    tmp_path: Path, with_cert_manager: bool
) -> None:
    components = [WEBHOOK, CERT_MANAGER] if with_cert_manager else [WEBHOOK]
    validated = 0
    for document in render(tmp_path, *components):
        if document["apiVersion"].startswith("cert-manager.io/"):
            # cert-manager's kinds are CRDs, which kubernetes-validate
            # has no schema for: checked field by field below.
            assert with_cert_manager
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        validated += 1
    assert validated == 8


def test_configuration_asks_about_the_services_configmaps_only(
    rendered: list[dict[str, Any]],
) -> None:
    webhook = configuration(webhook_objects(rendered))
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["configmaps"],
            "scope": "Namespaced",
        }
    ]
    selector = webhook["objectSelector"]["matchLabels"]
    assert selector.items() <= manifest("configmap.yaml")["metadata"]["labels"].items()
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["sideEffects"] == "None"
    assert webhook["failurePolicy"] == "Fail"
    # The webhook's own deadline leaves time for the answer to travel.
    assert DEFAULT_DEADLINE + 1 <= webhook["timeoutSeconds"] <= 10


def test_configuration_calls_the_webhook_service_at_validate(
    rendered: list[dict[str, Any]],
) -> None:
    objects = webhook_objects(rendered)
    called = configuration(objects)["clientConfig"]["service"]
    service = objects["Service"]
    assert called["name"] == service["metadata"]["name"]
    assert called["path"] == "/" + VALIDATE_PATH.decode()
    [port] = service["spec"]["ports"]
    assert called["port"] == port["port"]
    pod = objects["Deployment"]["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    pdb = objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert pdb.items() <= pod["metadata"]["labels"].items()
    [https] = webhook_container(objects)["ports"]
    assert port["targetPort"] == https["name"]


def webhook_options(served: dict[str, Any]) -> WebhookOptions:
    options = WebhookOptions()
    options.parseOptions(served["args"])
    return options


def test_pod_runs_the_webhook_plugin_of_the_services_image(
    rendered: list[dict[str, Any]],
) -> None:
    objects = webhook_objects(rendered)
    served = webhook_container(objects)
    assert served["image"] == container()["image"]
    assert served["command"] == [*exec_form("ENTRYPOINT")[:-1], WebhookOptions.prog]
    options = webhook_options(served)
    [https] = served["ports"]
    assert options["listen"] == f"tcp:{https['containerPort']}"
    # The key the service's pods mount, with the service's size limit.
    assert options["key"] == CONFIG_KEY
    assert options["max-bytes"] == WebhookOptions()["max-bytes"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert served[probe]["httpGet"]["scheme"] == "HTTPS"
        assert served[probe]["httpGet"]["port"] == "https"


def test_pod_reads_the_pair_from_the_certificates_secret(
    rendered: list[dict[str, Any]],
) -> None:
    objects = webhook_objects(rendered)
    pod = pod_of(objects)
    files = webhook_options(webhook_container(objects))["tls"]
    mount, volume = mounted(objects, files.directory)
    assert mount["readOnly"] is True and "subPath" not in mount
    serving = the_one(rendered, "Certificate", "configmapdemo-webhook")
    assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_pod_has_a_writable_tmp_for_large_review_bodies(
    rendered: list[dict[str, Any]],
) -> None:
    objects = webhook_objects(rendered)
    served = webhook_container(objects)
    assert served["securityContext"]["readOnlyRootFilesystem"] is True
    mount, volume = mounted(objects, "/tmp")
    assert not mount.get("readOnly", False)
    assert "emptyDir" in volume


def test_pod_runs_locked_down_as_the_services_pods(
    rendered: list[dict[str, Any]],
) -> None:
    objects = webhook_objects(rendered)
    served = webhook_container(objects)
    pod = pod_of(objects)
    base = manifest("deployment.yaml")["spec"]["template"]["spec"]
    for field in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile"):
        assert pod["securityContext"][field] == base["securityContext"][field]
    assert served["securityContext"] == container()["securityContext"]
    assert set(served["resources"]["requests"]) == {"cpu", "memory"}
    assert set(served["resources"]["limits"]) == {"cpu", "memory"}
    assert objects["Deployment"]["spec"]["replicas"] >= 2
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


def test_cert_manager_signs_the_services_names_and_injects_its_ca(
    rendered: list[dict[str, Any]],
) -> None:
    objects = webhook_objects(rendered)
    called = configuration(objects)["clientConfig"]["service"]
    namespace, service = called["namespace"], called["name"]
    serving = the_one(rendered, "Certificate", "configmapdemo-webhook")
    assert f"{service}.{namespace}.svc" in serving["spec"]["dnsNames"]
    annotations = objects["ValidatingWebhookConfiguration"]["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == (
        f"{namespace}/{serving['metadata']['name']}"
    )
    # The serving certificate is signed by a CA of its own, which does not
    # change when the serving certificate is renewed.
    issuer = the_one(rendered, "Issuer", serving["spec"]["issuerRef"]["name"])
    assert serving["spec"]["issuerRef"]["kind"] == "Issuer"
    ca = the_one(rendered, "Certificate", "configmapdemo-webhook-ca")
    assert ca["spec"]["isCA"] is True
    assert issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    root = the_one(rendered, "Issuer", ca["spec"]["issuerRef"]["name"])
    assert root["spec"] == {"selfSigned": {}}
    for certificate in (serving, ca):
        assert certificate["apiVersion"] == "cert-manager.io/v1"
        assert set(certificate["spec"]) <= {
            "secretName",
            "dnsNames",
            "duration",
            "renewBefore",
            "privateKey",
            "issuerRef",
            "isCA",
            "commonName",
        }


@pytest.fixture
def made_cert(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    result = subprocess.run(
        [str(MAKE_CERT), str(directory), "default"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture
def made_cert_server(made_cert: Path) -> Iterator[WebhookServer]:
    server = WebhookServer.of_pair(
        made_cert / "tls.crt",
        made_cert / "tls.key",
        (made_cert / "ca.crt").read_bytes(),
    )
    try:
        yield server
    finally:
        server.close()


def test_make_cert_makes_a_pair_the_api_server_can_trust(
    made_cert_server: WebhookServer, rendered: list[dict[str, Any]]
) -> None:
    called = configuration(webhook_objects(rendered))["clientConfig"]["service"]
    hostname = f"{called['name']}.{called['namespace']}.svc"
    review = admission_review(configmap_object({CONFIG_KEY: "message: hi\n"}))

    def answered() -> dict[str, Any] | None:
        if made_cert_server.process.poll() is not None:
            raise AssertionError(made_cert_server.output)
        try:
            return response_of(made_cert_server.post_as(hostname, review))
        except OSError:
            return None

    response = wait_for(answered, "the webhook to answer")
    assert response["allowed"] is True
    assert json.loads(review)["request"]["uid"] == response["uid"]


def test_make_cert_pair_is_valid_for_a_year(made_cert: Path) -> None:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate((made_cert / "tls.crt").read_bytes())
    valid = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert valid.days in (365, 366)


def test_the_configuration_is_applied_after_the_webhook_it_calls(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = [d["kind"] for d in rendered]
    assert kinds[-1] == "ValidatingWebhookConfiguration"
    assert kinds.count("ValidatingWebhookConfiguration") == 1


def test_readme_denial_is_what_the_webhook_answers_for_the_quoted_edit(
    rendered: list[dict[str, Any]],
) -> None:
    text = section(
        (DEPLOY / "README.md").read_text(),
        "Refuse a broken ConfigMap at the API server (optional)",
    )
    edit, quoted = (b for b in blocks(text) if b.language in ("console", ""))
    # The sed line quoted: a second message under the first.
    assert edit.lines[0].startswith(
        "$ sed 's/^    message: .*/&\\n    message: again/' deploy/configmap.yaml"
    )
    bad = re.sub(
        r"^    message: .*",
        r"\g<0>\n    message: again",
        (DEPLOY / "configmap.yaml").read_text(),
        flags=re.MULTILINE,
    )
    webhook = AdmissionWebhook(parse_message, key=CONFIG_KEY, runner=inline)
    answer = result_of(webhook.answer(admission_review(yaml.safe_load(bad))))
    message = json.loads(answer.body)["response"]["status"]["message"]
    name = configuration(webhook_objects(rendered))["name"]
    assert quoted.lines == [f'admission webhook "{name}" denied the request: {message}']

"""
deploy/monitoring/: the Prometheus Operator's ServiceMonitor and
PrometheusRule, rendered by C{kubectl kustomize}; the rules checked and
each alert unit-tested by the real C{promtool}.

The two kinds are CRDs (monitoring.coreos.com/v1), whose schemas the
offline validator of the other manifests does not have: they are checked
here structurally, for the fields the operator reads, and the rules
themselves by promtool.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy import DEPLOY, kustomize, manifest, tool
from tests.test_docs import blocks, section

MONITORING = DEPLOY / "monitoring"
TESTS = Path(__file__).resolve().parent / "alerts-test.yaml"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """
    The real promtool run with C{args} in C{cwd}.
    """
    return subprocess.run(
        [tool("promtool", "apt-get install -y prometheus"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    """
    The objects of deploy/monitoring/ as C{kubectl kustomize} renders them,
    by kind.
    """
    objects = kustomize(MONITORING)
    by_kind = {d["kind"]: d for d in objects}
    assert len(by_kind) == len(objects)
    return by_kind


def _rules_file(rendered: dict[str, dict[str, Any]], directory: Path) -> Path:
    """
    The PrometheusRule's C{spec} as the rules file promtool and Prometheus
    read, in C{directory} beside a copy of the unit tests.
    """
    rules = directory / "rules.yaml"
    rules.write_text(yaml.safe_dump(rendered["PrometheusRule"]["spec"]))
    shutil.copy(TESTS, directory / TESTS.name)
    return rules


def test_monitoring_renders_a_service_monitor_and_a_prometheus_rule(
    rendered: dict[str, dict[str, Any]],
) -> None:
    assert sorted(rendered) == ["PrometheusRule", "ServiceMonitor"]
    for document in rendered.values():
        assert document["apiVersion"] == "monitoring.coreos.com/v1"
        assert document["metadata"]["name"] == "configmap-microservice-demo"
        assert set(document) == {"apiVersion", "kind", "metadata", "spec"}


def test_service_monitor_scrapes_the_services_metrics_port(
    rendered: dict[str, dict[str, Any]],
) -> None:
    spec = rendered["ServiceMonitor"]["spec"]
    service = manifest("service.yaml")
    assert spec["selector"] == {"matchLabels": service["metadata"]["labels"]}
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] in [port["name"] for port in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    # deploy/README.md: scraped every 30 s.
    assert endpoint["interval"] == "30s"
    assert set(endpoint) <= {"port", "path", "interval", "scheme", "tlsConfig"}


def test_with_https_the_service_monitor_scrapes_the_https_port_trusting_the_ca(
    tmp_path: Path,
) -> None:
    # deploy/README.md, "Alerts and runbooks": the kustomization it quotes,
    # beside deploy/ as the README's commands are run from its parent.
    readme = (DEPLOY / "README.md").read_text()
    [command] = [
        "\n".join(block.lines)
        for block in blocks(section(readme, "Alerts and runbooks"))
        if "deploy/monitoring/tls" in "\n".join(block.lines)
    ]
    site = tmp_path / "with-tls"
    site.mkdir()
    (site / "kustomization.yaml").write_text(
        command.split("<<'YAML'\n")[1].split("\nYAML\n")[0]
    )
    (tmp_path / "deploy").symlink_to(DEPLOY)
    rendered = {d["kind"]: d for d in kustomize(site)}
    [endpoint] = rendered["ServiceMonitor"]["spec"]["endpoints"]
    service = rendered["Service"]
    assert [port["name"] for port in service["spec"]["ports"]] == [endpoint["port"]]
    assert endpoint["scheme"] == "https"
    assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "30s")
    tls = endpoint["tlsConfig"]
    [volume] = [
        volume
        for volume in rendered["Deployment"]["spec"]["template"]["spec"]["volumes"]
        if "secret" in volume
    ]
    assert tls["ca"]["secret"] == {
        "name": volume["secret"]["secretName"],
        "key": "ca.crt",
    }
    # The name verified is one the README's Certificate is issued for.
    [certificate] = [
        document
        for block in blocks(section(readme, "HTTPS from a TLS Secret (optional)"))
        if block.language == "yaml"
        for document in [yaml.safe_load("\n".join(block.lines))]
        if document["kind"] == "Certificate"
    ]
    assert tls["serverName"] == service["metadata"]["name"]
    assert tls["serverName"] in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["secretName"] == tls["ca"]["secret"]["name"]


def test_rules_pass_promtool_check(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    rules = _rules_file(rendered, tmp_path)
    result = promtool("check", "rules", rules.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_every_alert_passes_its_promtool_unit_tests(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    _rules_file(rendered, tmp_path)
    result = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [group] = rendered["PrometheusRule"]["spec"]["groups"]
    alerts = {rule["alert"] for rule in group["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", TESTS.read_text()))
    assert tested == alerts


def test_a_broken_alert_fails_its_unit_test(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    rules = _rules_file(rendered, tmp_path)
    rules.write_text(rules.read_text().replace("> 180", "> 1800"))
    result = promtool("test", "rules", TESTS.name, cwd=tmp_path)
    assert result.returncode == 1


def test_every_alert_has_its_runbook_in_the_deploy_readme(
    rendered: dict[str, dict[str, Any]],
) -> None:
    readme = (DEPLOY / "README.md").read_text()
    [group] = rendered["PrometheusRule"]["spec"]["groups"]
    for rule in group["rules"]:
        name = rule["alert"]
        assert rule["annotations"]["runbook"] == f'deploy/README.md, "{name}"'
        assert f"\n### {name}\n" in readme, name
        assert rule["labels"]["severity"] in {"warning", "critical"}

"""Deployment files (deploy/, Dockerfile): every kustomize overlay renders and
passes the Kubernetes schemas offline, workloads are Guaranteed QoS with
one shard per CPU, the PrometheusRule and the dashboard ConfigMap come from
their one source, YAML is lint-clean, the Dockerfile is hadolint-clean, the
systemd unit verifies, and the seccomp profile allows every system call the
server makes. The linters come from tests/python/requirements.txt."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import requests

from harness import (HTTP_TIMEOUT, REPO, BingsanServer, ServerError, create_table_raw, local_path,
                     table_url)

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir())
# The schemas kubernetes-validate ships; a version whose API has every
# field the manifests use (the preStop `sleep` action is on by default since 1.30).
K8S_VERSION = "1.32"
# Prometheus Operator kinds: no schema in kubernetes-validate, checked by
# hand below (test_monitoring_resources_match_their_sources).
CRD_GROUPS = ("monitoring.coreos.com/",)
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A linter installed by requirements.txt next to this interpreter."""
    path = VENV_BIN / name
    assert path.is_file(), f"{name} is missing from the venv: pip install -r tests/python/requirements.txt"
    return str(path)


def render(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: overlays not rendered")
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(overlay):
    import kubernetes_validate

    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Service", "ConfigMap", "Secret", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert kinds & {"StatefulSet", "Deployment"}, kinds
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_is_guaranteed_with_one_shard_per_cpu(overlay):
    docs = render(overlay)
    (workload,) = by_kind(docs, "StatefulSet") + by_kind(docs, "Deployment")
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    flags = {}
    for ref in container["envFrom"]:
        (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == ref["configMapRef"]["name"]]
        flags.update(cm["data"])
    res = container["resources"]
    assert res["requests"] == res["limits"], "requests must equal limits (Guaranteed QoS)"
    cpu = res["limits"]["cpu"]
    assert str(cpu).isdigit() and int(cpu) >= 1, f"whole CPUs only, not {cpu!r}"
    assert flags["BINGSAN_SHARDS"] == str(cpu), "one shard per CPU of the limit"
    # Probes on the health routes, on the port the server listens on.
    port = int(flags["BINGSAN_LISTEN"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == port
    assert ports["metrics"] == int(flags["BINGSAN_METRICS_LISTEN"].rsplit(":", 1)[1])
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # Drain fits in the grace period, after the preStop pause.
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = int(flags["BINGSAN_DRAIN_TIMEOUT_MS"]) / 1000
    assert pause + drain + 2 <= pod["terminationGracePeriodSeconds"]
    # The seccomp profile is the one shipped.
    profile = pod["securityContext"]["seccompProfile"]
    assert profile["type"] == "Localhost"
    assert (K8S / "seccomp" / Path(profile["localhostProfile"]).name).is_file()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The data directory and warehouse are on volumes, not the read-only root.
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    for var in ("BINGSAN_DATA_DIR", "BINGSAN_WAREHOUSE"):
        assert any(flags[var].startswith(m) for m in mounts), (var, mounts)
    # The PDB and the Service select these pods.
    labels = workload["spec"]["template"]["metadata"]["labels"]
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (svc,) = by_kind(docs, "Service")
    assert svc["spec"]["selector"].items() <= labels.items()
    if workload["kind"] == "Deployment":
        assert workload["spec"]["replicas"] > 1 and "BINGSAN_STORE" in {e["name"] for e in container["env"]}
        assert pdb["spec"]["minAvailable"] < workload["spec"]["replicas"]
    else:
        assert workload["spec"]["replicas"] == 1, "the embedded store allows one server"
        assert workload["spec"]["volumeClaimTemplates"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_resources_match_their_sources(overlay):
    docs = render(overlay)
    (rule,) = by_kind(docs, "PrometheusRule")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "bingsan-alerts.yml").read_text())
    assert rule["spec"] == alerts
    (dash,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "bingsan-grafana-dashboard"]
    assert json.loads(dash["data"]["bingsan-dashboard.json"]) == json.loads(
        (DEPLOY / "grafana" / "bingsan-dashboard.json").read_text())
    (mon,) = by_kind(docs, "ServiceMonitor")
    (svc,) = by_kind(docs, "Service")
    assert mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert mon["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}


def test_prometheusrule_file_is_generated_from_the_alerts():
    out = subprocess.run([str(DEPLOY / "prometheus" / "gen-prometheusrule"), "--check"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_every_alert_has_a_runbook():
    """docs/operations.md has a runbook heading for each alert of the rule file."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "bingsan-alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert len(alerts) >= 12
    docs = (REPO / "docs" / "operations.md").read_text()
    runbooks = docs[docs.index("## Alert runbooks"):]
    headings = {line[4:].strip() for line in runbooks.splitlines() if line.startswith("### ")}
    assert alerts <= headings, f"alerts without a runbook: {sorted(alerts - headings)}"


def test_yamllint_deploy():
    out = subprocess.run([tool("yamllint"), "-f", "parsable", "-c", str(DEPLOY / ".yamllint.yaml"), str(DEPLOY)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_hadolint_dockerfile():
    out = subprocess.run([tool("hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_systemd_unit_verifies(tmp_path, binary):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (DEPLOY / "systemd" / "bingsan.service").read_text()
    # verify checks that ExecStart's binary exists: point it at this build.
    assert "ExecStart=/usr/local/bin/bingsan serve" in unit
    (tmp_path / "bingsan.service").write_text(unit.replace("/usr/local/bin/bingsan", str(binary)))
    out = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "bingsan.service")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    for needed in ("LimitNOFILE=65536", "LimitMEMLOCK=", "ProtectSystem=strict", "NoNewPrivileges=yes",
                   "User=bingsan", "ReadWritePaths=", "Restart=on-failure", "io_uring_setup"):
        assert needed in unit, needed


@pytest.mark.single_node(reason="traces the system calls of one process")
def test_seccomp_profile_allows_every_call_the_server_makes(server_factory, tmp_path):
    """Runs a server under strace through start, requests and a graceful
    stop; every system call it made must be allowed unconditionally by the
    profile (calls with argument filters: socket, personality, clone)."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: the profile's coverage is not checked")
    profile = json.loads((K8S / "seccomp" / "bingsan-io-uring.json").read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}
    assert {"io_uring_setup", "io_uring_enter", "io_uring_register"} <= allowed
    trace = tmp_path / "strace.out"
    s = server_factory(name="traced", wrapper=["strace", "-f", "-qq", "-o", str(trace)])
    with s.raw() as c:
        assert c.request("POST", "/v1/namespaces", json.dumps({"namespace": ["s"]}).encode()).status == 200
        assert c.request("GET", "/v1/namespaces/s").status == 200
    s.metrics()
    # SIGTERM to the server itself (strace does not pass it on): a graceful stop.
    (child,) = Path(f"/proc/{s.pid}/task/{s.pid}/children").read_text().split()
    os.kill(int(child), signal.SIGTERM)
    assert s.proc.wait(30) == 0, s.log_tail()
    s.stop()
    called = set()
    for line in trace.read_text().splitlines():
        # "<pid> name(args) = result", "<pid> <... name resumed>..."
        rest = line.split(" ", 1)[1].lstrip() if " " in line else ""
        rest = rest.removeprefix("<... ")
        name = rest.split("(", 1)[0].split(" ", 1)[0]
        if name.isidentifier():
            called.add(name)
    assert "io_uring_enter" in called, sorted(called)
    # clone3 answers ENOSYS, as in the runtimes' default: glibc then uses clone.
    fallback = {n for r in profile["syscalls"] if r.get("errnoRet") == errno.ENOSYS for n in r["names"]}
    assert called <= allowed | fallback, f"denied by the profile: {sorted(called - allowed - fallback)}"


def seccomp_filter(profile: dict, drop: set[str] = frozenset()):
    """The profile as a libseccomp filter (pyseccomp, on Debian's
    libseccomp2), built as runc builds it: names this libseccomp does not
    know are left out; `drop` leaves out more."""
    import pyseccomp as sc

    ops = {"SCMP_CMP_LT": sc.LT, "SCMP_CMP_LE": sc.LE, "SCMP_CMP_EQ": sc.EQ, "SCMP_CMP_NE": sc.NE,
           "SCMP_CMP_GE": sc.GE, "SCMP_CMP_GT": sc.GT, "SCMP_CMP_MASKED_EQ": sc.MASKED_EQ}
    f = sc.SyscallFilter(defaction=sc.ERRNO(profile["defaultErrnoRet"]))
    for rule in profile["syscalls"]:
        action = sc.ALLOW if rule["action"] == "SCMP_ACT_ALLOW" else sc.ERRNO(rule["errnoRet"])
        args = [sc.Arg(a["index"], ops[a["op"]], a["value"], a.get("valueTwo", 0)) for a in rule.get("args", [])]
        for name in set(rule["names"]) - drop:
            try:
                f.add_rule(action, name, *args)
            except (OSError, RuntimeError, ValueError):
                pass  # not a system call of this architecture
    return f


def test_server_runs_under_the_seccomp_profile(server_factory, tmp_path):
    """The profile enforced by the kernel: the server starts, creates a
    table (io_uring file writes and syncs), loads it and stops gracefully;
    without the three io_uring calls (the runtimes' default) it cannot start."""
    profile = json.loads((K8S / "seccomp" / "bingsan-io-uring.json").read_text())
    enforced = seccomp_filter(profile)
    s = server_factory(name="seccomp", preexec=enforced.load)
    with requests.Session() as http:
        assert http.post(s.api("namespaces"), json={"namespace": ["sc"]}, timeout=HTTP_TIMEOUT).status_code == 200
        created = create_table_raw(http, s, "sc", "t")
        assert http.get(table_url(s, "sc", "t"), timeout=HTTP_TIMEOUT).status_code == 200
    assert local_path(created["metadata-location"]).is_file()
    assert s.stop() == 0, s.log_tail()

    default = seccomp_filter(profile, drop={"io_uring_setup", "io_uring_enter", "io_uring_register"})
    blocked = BingsanServer(tmp_path / "blocked", name="blocked", preexec=default.load)
    with pytest.raises(ServerError, match="exited with 1 during start-up"):
        blocked.start(ready_timeout=30)
    blocked.stop()
    assert "io_uring is not permitted" in blocked.log_text() and "bingsan-io-uring.json" in blocked.log_text()

"""A hostile tenant against the trust boundary, on the real control plane.

The chart's admission policies and tenant roles are applied by
hack/tenancy.sh (helm template, the admin kubeconfig). The tenant is a user
impersonated by the admin (`kubectl --as`), bound to the built-in `edit`
ClusterRole in its own governed namespace, as a platform team would set it up:
everything it may do comes from the roles the chart aggregates into `edit`.
In the test control plane the operator runs as the admin, which the policies
trust as the operator; the Jobs wattcap would create are created here as the
admin with the operator's own `build_job`, so no operator process is needed.

Each test states what the tenant tried and asserts the API server's refusal
with a message naming the rule.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import ROOT, OperatorProcess, create_namespace, kget, kubectl

from wattcap.controller import build_job
from wattcap.model import parse_training_job

pytestmark = pytest.mark.integration

TENANT = "tenant-alice"
TENANT_GROUPS = ("tenants",)
VIEWER = "viewer-bob"
GPU_WORKLOADS = "submit a TrainingJob"


@pytest.fixture(scope="module")
def tenancy(crds: str) -> Iterator[str]:
    """The chart's admission policies and aggregated tenant roles, applied and in force."""
    subprocess.run([str(ROOT / "hack" / "tenancy.sh"), "up"], check=True, env=_env(crds))
    yield crds
    subprocess.run([str(ROOT / "hack" / "tenancy.sh"), "down"], check=False, env=_env(crds))


def _env(kubeconfig: str) -> dict[str, str]:
    import os

    return {**os.environ, "KUBECONFIG": kubeconfig}


@pytest.fixture
def tenant_ns(tenancy: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A governed namespace where TENANT holds `edit` and VIEWER holds `view`."""
    kc = tenancy
    ns = f"tenant-{request.node.name.replace('_', '-')[:30].lower()}-{random.randrange(10**6)}"
    ns = "".join(c if c.isalnum() or c == "-" else "-" for c in ns).strip("-")
    create_namespace(kc, ns)
    kubectl(kc, "label", "namespace", ns, "wattcap.io/governed=true")
    kubectl(
        kc,
        "create",
        "rolebinding",
        "tenant-edit",
        "--clusterrole=edit",
        f"--user={TENANT}",
        "-n",
        ns,
    )
    kubectl(
        kc, "create", "rolebinding", "viewer", "--clusterrole=view", f"--user={VIEWER}", "-n", ns
    )
    _wait_until_in_force(kc, ns)
    yield ns
    kubectl(kc, "delete", "namespace", ns, "--wait=false", check=False)


_IN_FORCE: dict[str, bool] = {}


def _wait_until_in_force(kc: str, ns: str) -> None:
    """Policies and role aggregation take effect asynchronously: probe with a
    server-side dry run until a tenant's GPU pod is refused and a TrainingJob
    allowed, once per module (bounded: a policy that never takes effect is
    left for each test's own assertion to report)."""
    if _IN_FORCE.setdefault("waited", False):
        return
    _IN_FORCE["waited"] = True
    deadline = time.monotonic() + 60
    while True:
        refused = as_tenant(
            kc, ns, "create", "--dry-run=server", "-f", "-", stdin=dump(gpu_pod("probe"))
        )
        can = as_tenant(kc, ns, "auth", "can-i", "create", "trainingjobs.wattcap.io")
        if (
            refused.returncode != 0 and GPU_WORKLOADS in refused.stderr
        ) and can.stdout.strip() == "yes":
            return
        if time.monotonic() > deadline:
            return  # let the test's own assertion say what is missing
        time.sleep(0.5)


def as_tenant(kc: str, ns: str, *args: str, stdin: str | None = None, user: str = TENANT) -> Any:
    groups = [f"--as-group={g}" for g in TENANT_GROUPS] if user == TENANT else []
    return kubectl(kc, f"--as={user}", *groups, "-n", ns, *args, stdin=stdin, check=False)


def dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj)


def container(name: str = "main", gpus: int | None = 8) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "trainer:1"}
    if gpus is not None:
        c["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    return c


def pod_spec(**extra: Any) -> dict[str, Any]:
    return {"restartPolicy": "Never", "containers": [container()], **extra}


def gpu_pod(name: str, spec: dict[str, Any] | None = None, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec or pod_spec(),
    }


def template(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "x"}}, "spec": spec or pod_spec()}


def workload(kind: str, name: str) -> dict[str, Any]:
    """A workload of `kind` whose pods request 8 GPUs."""
    sel = {"matchLabels": {"app": "x"}}
    body: dict[str, Any]
    if kind == "Job":
        api, body = "batch/v1", {"template": template()}
    elif kind == "CronJob":
        api = "batch/v1"
        body = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template()}}}
    elif kind == "Deployment":
        always = template(pod_spec(restartPolicy="Always"))
        api, body = "apps/v1", {"replicas": 1, "selector": sel, "template": always}
    elif kind == "StatefulSet":
        always = template(pod_spec(restartPolicy="Always"))
        api, body = "apps/v1", {"serviceName": name, "selector": sel, "template": always}
    elif kind in ("ReplicaSet", "DaemonSet"):
        api, body = (
            "apps/v1",
            {"selector": sel, "template": template(pod_spec(restartPolicy="Always"))},
        )
    else:
        raise ValueError(kind)
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": body}


def refused(res: Any, *needles: str) -> None:
    assert res.returncode != 0, f"accepted: {res.stdout}"
    for needle in needles:
        assert needle in res.stderr, res.stderr


# --------------------------------------------------------------------- only wattcap starts GPU work


@pytest.mark.parametrize(
    "kind", ["Job", "Deployment", "CronJob", "StatefulSet", "ReplicaSet", "DaemonSet"]
)
def test_bypass_workload_requesting_gpus_is_refused(
    tenant_ns: str, tenancy: str, kind: str
) -> None:
    """The tenant starts GPU work with a plain workload instead of a TrainingJob."""
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(workload(kind, "bypass")))
    refused(res, GPU_WORKLOADS, f"a {kind} that requests nvidia.com/gpu")


def test_bypass_pod_requesting_gpus_is_refused(tenant_ns: str, tenancy: str) -> None:
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(gpu_pod("bypass")))
    refused(res, GPU_WORKLOADS, "a Pod that requests nvidia.com/gpu")


def test_gpus_in_an_init_container_are_refused(tenant_ns: str, tenancy: str) -> None:
    """GPUs hidden in an init container (or a restartable sidecar) of a GPU-free pod."""
    spec = pod_spec(containers=[container(gpus=None)], initContainers=[container("init", 8)])
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(gpu_pod("init", spec)))
    refused(res, GPU_WORKLOADS, "any container or init container")
    job = workload("Job", "sidecar")
    job["spec"]["template"]["spec"] = spec
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(job))
    refused(res, GPU_WORKLOADS)


def test_forged_trainingjob_label_is_refused(tenant_ns: str, tenancy: str) -> None:
    """A GPU-free pod labelled as a TrainingJob's would be left out of GPU accounting."""
    spec = pod_spec(containers=[container(gpus=None)])
    forged = gpu_pod("forged", spec, labels={"wattcap.io/trainingjob": "victim"})
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(forged))
    refused(res, "only wattcap sets the label wattcap.io/trainingjob")
    job = workload("Job", "forged")
    job["metadata"]["labels"] = {"wattcap.io/trainingjob": "victim"}
    job["spec"]["template"]["spec"] = spec
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(job))
    refused(res, "only wattcap sets the label wattcap.io/trainingjob")


def test_gpu_free_work_and_trainingjobs_are_still_the_tenants(tenant_ns: str, tenancy: str) -> None:
    """The boundary refuses GPU work outside wattcap, nothing else the tenant may do."""
    job = workload("Job", "cpu-only")
    job["spec"]["template"]["spec"] = pod_spec(containers=[container(gpus=None)])
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(job))
    assert res.returncode == 0, res.stderr
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(trainingjob("mine")))
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------- the operator's state


def trainingjob(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "gpusPerReplica": 8,
            "replicas": 1,
            "preemptible": True,
            "template": {"spec": {"containers": [container(gpus=None)]}},
            **spec,
        },
    }


@pytest.fixture
def owned_job(tenant_ns: str, tenancy: str) -> tuple[str, str]:
    """A tenant's TrainingJob and the suspended (preempted) Job wattcap made for it."""
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(trainingjob("train")))
    assert res.returncode == 0, res.stderr
    tj = kget(tenancy, "-n", tenant_ns, "trainingjob", "train")
    spec = parse_training_job(tj)
    job = build_job(tj, spec, ("gpu-node-0",), {"gpuWatts": 650.0, "durationSeconds": 3600})
    job["spec"]["suspend"] = True
    kubectl(tenancy, "create", "-f", "-", stdin=json.dumps(job))  # as the operator
    return tenant_ns, job["metadata"]["name"]


def test_tenant_cannot_edit_the_forecast_annotation(
    owned_job: tuple[str, str], tenancy: str
) -> None:
    """gpuWatts: 0 on the owned Job would plan it below idle."""
    ns, name = owned_job
    fake = json.dumps({"gpuWatts": 0, "durationSeconds": 3600})
    res = as_tenant(
        tenancy, ns, "annotate", "job", name, f"wattcap.io/forecast={fake}", "--overwrite"
    )
    refused(res, "wattcap.io/* annotations of a Job that wattcap manages")


def test_tenant_cannot_unsuspend_a_preempted_job(owned_job: tuple[str, str], tenancy: str) -> None:
    ns, name = owned_job
    res = as_tenant(
        tenancy, ns, "patch", "job", name, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    refused(res, "spec.suspend of a Job that wattcap manages is changed only by wattcap")
    # the operator may: that is how a preempted job resumes
    ok = kubectl(
        tenancy,
        "-n",
        ns,
        "patch",
        "job",
        name,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false}}',
        check=False,
    )
    assert ok.returncode == 0, ok.stderr


def test_tenant_cannot_raise_parallelism(owned_job: tuple[str, str], tenancy: str) -> None:
    ns, name = owned_job
    res = as_tenant(
        tenancy, ns, "patch", "job", name, "--type=merge", "-p", '{"spec":{"parallelism":8}}'
    )
    refused(res, "spec.parallelism of a Job that wattcap manages")


def test_tenant_cannot_lift_the_overrun_deadline(owned_job: tuple[str, str], tenancy: str) -> None:
    """Under overrunAction Stop the Job's activeDeadlineSeconds stops a job that
    overruns its expectedDuration; the tenant cannot set it out of reach."""
    ns, name = owned_job
    patch = '{"spec":{"activeDeadlineSeconds":99999999}}'
    res = as_tenant(tenancy, ns, "patch", "job", name, "--type=merge", "-p", patch)
    refused(res, "spec.activeDeadlineSeconds of a Job that wattcap manages")


def test_tenant_cannot_strip_owner_references(owned_job: tuple[str, str], tenancy: str) -> None:
    """Without its owner the Job would drop out of wattcap's accounting."""
    ns, name = owned_job
    strip = '[{"op":"remove","path":"/metadata/ownerReferences"}]'
    res = as_tenant(tenancy, ns, "patch", "job", name, "--type=json", "-p", strip)
    refused(res, "metadata.ownerReferences of a Job that wattcap manages")
    res = as_tenant(tenancy, ns, "label", "job", name, "wattcap.io/trainingjob-")
    refused(res, "wattcap.io/* labels of a Job that wattcap manages")
    # labels of its own are the tenant's business
    ok = as_tenant(tenancy, ns, "label", "job", name, "team=vision")
    assert ok.returncode == 0, ok.stderr


POWER_LIMIT = "wattcap.io/gpu-power-limit-watts"
POWER_LIMIT_RULE = "wattcap.io/gpu-power-limit-watts of a pod is written only by wattcap"


def test_tenant_cannot_write_the_gpu_power_limit(tenant_ns: str, tenancy: str) -> None:
    """The node agent sets a GPU's power limit from this pod annotation: a tenant that
    lifted its throttle would draw what the site planned away under its cap."""
    worker = gpu_pod("worker", pod_spec(containers=[container(gpus=None)]))
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(worker))
    assert res.returncode == 0, res.stderr  # a GPU-free pod is the tenant's
    res = as_tenant(tenancy, tenant_ns, "annotate", "pod", "worker", f"{POWER_LIMIT}=700")
    refused(res, POWER_LIMIT_RULE)
    kubectl(tenancy, "-n", tenant_ns, "annotate", "pod", "worker", f"{POWER_LIMIT}=300")  # operator
    res = as_tenant(
        tenancy, tenant_ns, "annotate", "pod", "worker", f"{POWER_LIMIT}=700", "--overwrite"
    )
    refused(res, POWER_LIMIT_RULE)
    res = as_tenant(tenancy, tenant_ns, "annotate", "pod", "worker", f"{POWER_LIMIT}-")
    refused(res, POWER_LIMIT_RULE)
    preset = gpu_pod("preset", pod_spec(containers=[container(gpus=None)]))
    preset["metadata"]["annotations"] = {POWER_LIMIT: "700"}
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(preset))
    refused(res, POWER_LIMIT_RULE)
    # the pod's other annotations are still the tenant's
    res = as_tenant(tenancy, tenant_ns, "annotate", "pod", "worker", "team/note=x")
    assert res.returncode == 0, res.stderr


def test_tenant_cannot_write_trainingjob_status(tenant_ns: str, tenancy: str) -> None:
    """Status is the operator's report: phase, forecast, measuredWatts."""
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(trainingjob("mine")))
    assert res.returncode == 0, res.stderr  # edit lets the tenant submit
    patch = '{"status":{"phase":"Succeeded","measuredWatts":8}}'
    res = as_tenant(
        tenancy,
        tenant_ns,
        "patch",
        "tj",
        "mine",
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )
    refused(res, "forbidden", "trainingjobs/status")
    # a viewer reads, and writes nothing
    assert as_tenant(tenancy, tenant_ns, "get", "tj", "mine", user=VIEWER).returncode == 0
    res = as_tenant(tenancy, tenant_ns, "delete", "tj", "mine", user=VIEWER)
    refused(res, "forbidden")


# --------------------------------------------------------------------- self-declared numbers


@pytest.mark.parametrize(
    ("field", "before", "after"),
    [
        ("preemptible", True, False),
        ("workloadClass", "tiny", "llm-pretrain"),
        ("priority", 0, 1000),
        ("priorityClassName", "wattcap-test-p1", "wattcap-test-p10"),
        ("gpuWattsHint", 650, 80),
        ("expectedDuration", 60, "10h"),
        ("maxDelay", "4h", 0),
    ],
)
def test_declared_fields_are_immutable_after_submission(
    tenant_ns: str, tenancy: str, field: str, before: Any, after: Any
) -> None:
    """E.g. backfill as a 60 s preemptible job before a demand-response window,
    then flip to non-preemptible and run on through it."""
    res = as_tenant(
        tenancy, tenant_ns, "create", "-f", "-", stdin=dump(trainingjob("flip", **{field: before}))
    )
    assert res.returncode == 0, res.stderr
    patch = json.dumps({"spec": {field: after}})
    res = as_tenant(tenancy, tenant_ns, "patch", "tj", "flip", "--type=merge", "-p", patch)
    refused(res, f"spec.{field} is immutable")
    if field in ("gpuWattsHint", "expectedDuration", "maxDelay"):  # nor removed
        drop = json.dumps([{"op": "remove", "path": f"/spec/{field}"}])
        res = as_tenant(tenancy, tenant_ns, "patch", "tj", "flip", "--type=json", "-p", drop)
        refused(res, f"spec.{field} is immutable")


@contextlib.contextmanager
def operator_on_site(
    kc: str, log: Any, operator_kc: str | None = None, **policy_spec: Any
) -> Iterator[None]:
    """The PowerPolicy `site` (the name the other modules use, so it replaces
    any left behind) and `wattcap operator` running with `operator_kc` (default:
    the admin's `kc`); the policy is deleted while the operator still runs (it
    holds kopf's finalizer), then the operator stops."""
    spec = {"capWatts": 100_000, "controlPeriod": "2s", "nodeSelector": {"type": "kwok"}}
    policy = {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "PowerPolicy",
        "metadata": {"name": "site"},
        "spec": {**spec, **policy_spec},
    }
    kubectl(kc, "apply", "-f", "-", stdin=dump(policy))
    # with the chart's ServiceAccount, the site's Lease lives where the chart's
    # Role lets it write one: the release namespace
    env = {"WATTCAP_NAMESPACE": "wattcap-test"} if operator_kc else {}
    op = OperatorProcess(operator_kc or kc, log, env=env)
    op.start()
    try:
        yield
    finally:
        kubectl(kc, "delete", "powerpolicy", "site", "--timeout=60s", check=False)
        op.stop()


# --------------------------------------------------------------------- the operator's own role


def _operator_kubeconfig(kc: str, tmp: Any) -> str:
    """A kubeconfig for the chart's ServiceAccount, bound to the chart's ClusterRole only."""
    import os

    helm = os.environ.get("WATTCAP_HELM", os.path.expanduser("~/.cache/wattcap/bin/helm"))
    ns = "wattcap-test"  # hack/tenancy.sh renders release wattcap-test there: its SA is trusted
    rendered = subprocess.run(
        [
            helm,
            "template",
            "wattcap-test",
            str(ROOT / "charts" / "wattcap"),
            "--namespace",
            ns,
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/rbac.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    create_namespace(kc, ns, exist_ok=True)
    kubectl(kc, "apply", "-f", "-", stdin=rendered)
    token = kubectl(kc, "create", "token", "wattcap-test", "-n", ns, "--duration=1h").stdout.strip()
    path = str(tmp / "operator.kubeconfig")
    with open(kc) as src, open(path, "w") as dst:
        dst.write(src.read())
    kubectl(path, "config", "set-credentials", "wattcap-operator", f"--token={token}")
    kubectl(path, "config", "set-context", "--current", "--user=wattcap-operator")
    return path


def test_the_operator_runs_with_nothing_but_the_charts_role(
    tenant_ns: str, tenancy: str, tmp_path: Any
) -> None:
    """The trimmed ClusterRole still lets the operator admit a tenant's job, and
    the admission policies let its Job (and the Job's pods) through."""
    op_kc = _operator_kubeconfig(tenancy, tmp_path)
    who = kubectl(op_kc, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout
    assert who == "system:serviceaccount:wattcap-test:wattcap-test"
    assert (
        kubectl(op_kc, "auth", "can-i", "update", "jobs.batch", "-A", check=False).stdout.strip()
        == "no"
    )
    tj = trainingjob("admit-me", gpusPerReplica=1)
    tj["spec"]["template"]["metadata"] = {"annotations": {"wattcap.io/sim-duration": "600s"}}
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(tj))
    assert res.returncode == 0, res.stderr
    with operator_on_site(tenancy, tmp_path / "operator.log", op_kc):
        phase = _wait_for_phase(tenancy, tenant_ns, "admit-me", "Running")
        log = (tmp_path / "operator.log").read_text()
        assert phase == "Running", log[-3000:]
        # refused by RBAC or by an admission policy: the role or the policies are wrong.
        # (Other 403s, such as an earlier test's namespace still terminating, are not.)
        refused = [
            line
            for line in log.splitlines()
            if " cannot " in line or "ValidatingAdmissionPolicy" in line
        ]
        assert not refused, "\n".join(refused[:10])
        job = kget(tenancy, "-n", tenant_ns, "job", "admit-me")
        assert job["metadata"]["ownerReferences"][0]["controller"] is True


# --------------------------------------------------------------------- same name, new object


def test_the_charts_role_can_move_a_preempted_job_to_other_nodes(
    tenant_ns: str, tenancy: str, tmp_path: Any
) -> None:
    """A preempted job whose old node is gone resumes elsewhere: the operator
    deletes its suspended Job (uid precondition) and creates a fresh one. Under
    the chart's role that delete must be allowed, or the job never runs again."""
    op_kc = _operator_kubeconfig(tenancy, tmp_path)
    tj = trainingjob("mover")
    tj["spec"]["template"]["metadata"] = {"annotations": {"wattcap.io/sim-duration": "20s"}}
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(tj))
    assert res.returncode == 0, res.stderr
    site = {"pue": 1.0, "nodeBaseWatts": 500, "gpuIdleWatts": 70, "gpuTdpWatts": 700}
    site["safetyMargin"] = 0.0
    log = tmp_path / "operator.log"

    def cap(watts: float) -> None:
        patch = json.dumps({"spec": {"capWatts": watts}})
        kubectl(tenancy, "patch", "powerpolicy", "site", "--type=merge", "-p", patch)

    def job() -> dict[str, Any]:
        return kget(tenancy, "-n", tenant_ns, "job", "mover")

    with operator_on_site(tenancy, log, op_kc, **site):
        assert _wait_for_phase(tenancy, tenant_ns, "mover", "Running") == "Running"
        first = json.loads(job()["metadata"]["annotations"]["wattcap.io/placement"])
        uid = job()["metadata"]["uid"]
        cap(8 * 500 + 64 * 70 + 4 * 630)  # idle site plus 4 GPUs at TDP: 8 do not fit
        deadline = time.monotonic() + 60
        while not (job()["spec"].get("suspend") and not (job().get("status") or {}).get("active")):
            assert time.monotonic() < deadline, "the job was never preempted"
            time.sleep(0.5)
        for node in first:
            kubectl(tenancy, "cordon", node)
        try:
            cap(100_000)
            phase = _wait_for_phase(tenancy, tenant_ns, "mover", "Succeeded")
            assert phase == "Succeeded", log.read_text()[-3000:]
        finally:
            for node in first:
                kubectl(tenancy, "uncordon", node, check=False)
        assert job()["metadata"]["uid"] != uid, "a fresh Job was created on the new nodes"
        refused = [line for line in log.read_text().splitlines() if " cannot " in line]
        assert not refused, "\n".join(refused[:10])


def test_a_trainingjob_recreated_under_an_old_name_does_not_inherit_the_old_job(
    tenant_ns: str, tenancy: str, tmp_path: Any
) -> None:
    """The tenant deletes a finished TrainingJob and re-creates it under the same
    name before its old Job is collected (a finalizer holds the Job here, as a
    slow garbage collector would): matched by name, the new one would take the
    old Job's completion and "succeed" at once without running."""
    tj = trainingjob("same", gpusPerReplica=1)
    tj["spec"]["template"]["metadata"] = {"annotations": {"wattcap.io/sim-duration": "1s"}}
    job_held = False
    with operator_on_site(tenancy, tmp_path / "operator.log"):
        try:
            res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(tj))
            assert res.returncode == 0, res.stderr
            _wait_for_phase(tenancy, tenant_ns, "same", "Succeeded")
            kubectl(tenancy, "-n", tenant_ns, "patch", "job", "same", "--type=merge", "-p",
                    '{"metadata":{"finalizers":["wattcap.test/hold"]}}')  # fmt: skip
            job_held = True
            res = as_tenant(tenancy, tenant_ns, "delete", "tj", "same", "--wait=true")
            assert res.returncode == 0, res.stderr
            old_owner = kget(tenancy, "-n", tenant_ns, "job", "same")["metadata"]["ownerReferences"]
            res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(tj))
            assert res.returncode == 0, res.stderr
            first = _wait_for_phase(tenancy, tenant_ns, "same", None)
            assert first != "Succeeded", f"inherited the old Job (owner {old_owner})"
        finally:
            if job_held:
                kubectl(tenancy, "-n", tenant_ns, "patch", "job", "same", "--type=merge", "-p",
                        '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip


def test_a_tiny_hint_is_planned_at_the_policy_floor(
    tenant_ns: str, tenancy: str, tmp_path: Any
) -> None:
    """gpuWattsHint: 0.001 on a fresh class would plan 8 GPUs at idle power and be
    admitted under any cap; at the floor (0.5 x 700 W) it needs 2.24 kW, and the
    site has 1.5 kW to spend."""
    idle_site = 8 * 800 + 64 * 70  # kwok site: 8 nodes, 64 GPUs, PUE 1
    tj = trainingjob("liar", gpusPerReplica=8, gpuWattsHint=0.001, workloadClass="never-seen")
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(tj))
    assert res.returncode == 0, res.stderr
    site = {
        "capWatts": idle_site + 1500,
        "pue": 1.0,
        "safetyMargin": 0.0,
        "nodeBaseWatts": 800,
        "gpuIdleWatts": 70,
        "gpuTdpWatts": 700,
    }
    with operator_on_site(tenancy, tmp_path / "operator.log", **site):
        phase = _wait_for_phase(tenancy, tenant_ns, "liar", None)
        status = kget(tenancy, "-n", tenant_ns, "tj", "liar")["status"]
        assert phase == "Queued", status
        assert status["forecast"]["gpuWatts"] == 350.0, status["forecast"]


def test_a_tenant_cannot_jump_the_queue_by_writing_a_big_number(
    tenant_ns: str, tenancy: str, tmp_path: Any
) -> None:
    """The tenant's older `a-greedy` names a class of value 1 and writes
    priority 1,000,000; `b-fair` names a class of value 5. The site has power
    for one 8-GPU job: `b-fair` starts, and the status says each job's
    priority. The tenant can neither make a class of its own, nor name a
    system class, nor one the platform team has not marked for wattcap."""
    greedy = trainingjob(
        "a-greedy", priorityClassName="wattcap-test-p1", priority=1_000_000, preemptible=False
    )
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(greedy))
    assert res.returncode == 0, res.stderr
    time.sleep(1.1)  # strictly older: first in FIFO order
    fair = trainingjob("b-fair", priorityClassName="wattcap-test-p5", preemptible=False)
    res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(fair))
    assert res.returncode == 0, res.stderr
    unmarked = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": f"{tenant_ns}-mine"},
        "value": 1_000_000_000,
    }
    refused(as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(unmarked)), "forbidden")
    kubectl(tenancy, "apply", "-f", "-", stdin=dump(unmarked))  # the admin's, not for wattcap
    try:
        system = trainingjob("c-system", priorityClassName="system-node-critical")
        res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(system))
        refused(res, "spec.priorityClassName", "system-* PriorityClasses")
        other = trainingjob("d-other", priorityClassName=f"{tenant_ns}-mine")
        res = as_tenant(tenancy, tenant_ns, "create", "-f", "-", stdin=dump(other))
        assert res.returncode == 0, res.stderr
        idle_site = 8 * 800 + 64 * 70  # kwok site: 8 nodes, 64 GPUs, PUE 1
        site = {
            "capWatts": idle_site + 8 * (700 - 70) + 1000,  # one 8-GPU job at the TDP prior
            "pue": 1.0,
            "safetyMargin": 0.0,
            "nodeBaseWatts": 800,
            "gpuIdleWatts": 70,
            "gpuTdpWatts": 700,
        }
        with operator_on_site(tenancy, tmp_path / "operator.log", **site):
            deadline = time.monotonic() + 120
            while kget(tenancy, "-n", tenant_ns, "tj", "b-fair").get("status", {}).get(
                "phase"
            ) not in ("Admitted", "Running"):
                assert time.monotonic() < deadline, "b-fair was never admitted"
                time.sleep(0.5)
            st = kget(tenancy, "-n", tenant_ns, "tj", "a-greedy")["status"]
            assert (st["phase"], st["priority"]) == ("Queued", 1), st
            assert kget(tenancy, "-n", tenant_ns, "tj", "b-fair")["status"]["priority"] == 5
            _wait_for_phase(tenancy, tenant_ns, "d-other", None)
            st = kget(tenancy, "-n", tenant_ns, "tj", "d-other")["status"]
            assert st["reason"] == "InvalidPriorityClass", st
            assert "spec.priorityClassName" in st["message"] and "not marked" in st["message"]
    finally:
        kubectl(tenancy, "delete", "priorityclass", f"{tenant_ns}-mine", check=False)


def _wait_for_phase(kc: str, ns: str, name: str, phase: str | None) -> str:
    """The TrainingJob's phase once it is `phase` (None: once it has any); bounded."""
    deadline = time.monotonic() + 120
    while True:
        got = (kget(kc, "-n", ns, "tj", name).get("status") or {}).get("phase")
        if got and (phase is None or got == phase):
            return got
        assert time.monotonic() < deadline, f"{name} never reached {phase or 'a phase'}: {got}"
        time.sleep(0.5)

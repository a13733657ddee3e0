"""The Kubernetes manifests of deploy/k8s, checked offline (issue 25, item 3).

Each document is validated against Kubernetes 1.30's schemas, strictly (an
unknown or misspelt field fails), with PyPI's kubernetes-validate, which
carries the schemas; a misspelt copy must fail, so the validation is not
vacuous. Then checks of our own, which the schemas cannot make:
- every probe asks GET /health on the container's port, and that port is the
  one the ConfigMap tells embd to listen on (EMBD_PORT);
- the GPU Deployment requests and limits nvidia.com/gpu: 1, the CPU one asks
  for no GPU;
- the images are the ones docker/Dockerfile.cuda and docker/Dockerfile.cpu
  build (their `docker build -t` tags), run as the images' user;
- shutdown: a preStop hook, and terminationGracePeriodSeconds above the
  preStop sleep plus EMBD_SHUTDOWN_TIMEOUT, which holds EMBD_DRAIN_SECONDS;
- the Service selects both Deployments' pods and targets their named port;
- each HorizontalPodAutoscaler (autoscaling/v2) scales an existing
  Deployment on a Pods metric that embd exports as a gauge;
- the ConfigMap, Secret and volume claim the pods use are the ones defined;
- every EMBD_* variable given to embd is one of `embd serve`'s flags (with
  EMBD_BIN).

Environment: EMBD_SRC, EMBD_BIN (optional). Skips when kubernetes-validate
(or PyYAML) is not importable (scripts/setup-deps installs it).
"""
import copy
import glob
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from common import BIN, SRC, Checker, skip  # noqa: E402

try:
    import kubernetes_validate
    import yaml
except ImportError as e:
    skip(f"kubernetes-validate is not installed ({e}); scripts/setup-deps installs it")

K8S_VERSION = "1.30"
K8S = os.path.join(SRC, "deploy", "k8s")
c = Checker("deploy_k8s_manifests")

docs = []  # (file name, document)
for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
    with open(path, encoding="utf-8") as f:
        for d in yaml.safe_load_all(f):
            if d is not None:
                docs.append((os.path.basename(path), d))
c.check(len(docs) >= 7, f"only {len(docs)} documents in deploy/k8s")


def validate(doc):
    """None when doc is valid for K8S_VERSION (strict), else why not."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return None
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(str(p) for p in e.path)}: {e.message}"
    except (kubernetes_validate.SchemaNotFoundError,
            kubernetes_validate.VersionNotSupportedError) as e:
        return e.message


for name, d in docs:
    why = validate(d)
    c.check(why is None, f"{name}: {d.get('kind')} {d.get('metadata', {}).get('name')}: {why}")

by_kind = {}
for name, d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
deps = by_kind.get("Deployment", {})
c.check(set(deps) == {"embd-gpu", "embd-cpu"}, f"Deployments: {sorted(deps)}")
for kind in ("Service", "HorizontalPodAutoscaler", "ConfigMap", "PersistentVolumeClaim"):
    c.check(kind in by_kind, f"no {kind} in deploy/k8s")

# The validation is not vacuous: a misspelt field and a wrong type fail.
if "embd-gpu" in deps:
    bad = copy.deepcopy(deps["embd-gpu"])
    bad["spec"]["replica"] = 2
    c.check(validate(bad) is not None, "a Deployment with spec.replica passed the validation")
    bad = copy.deepcopy(deps["embd-gpu"])
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    c.check(validate(bad) is not None, "a string containerPort passed the validation")

cm = next(iter(by_kind.get("ConfigMap", {}).values()), {"metadata": {"name": None}, "data": {}})
conf = cm.get("data", {})
port = int(conf.get("EMBD_PORT", "8080"))  # embd's default port
drain = int(conf.get("EMBD_DRAIN_SECONDS", "2"))
shutdown = int(conf.get("EMBD_SHUTDOWN_TIMEOUT", "30"))
c.check(0 < drain < shutdown, f"EMBD_DRAIN_SECONDS {drain} within EMBD_SHUTDOWN_TIMEOUT {shutdown}")


def dockerfile(variant):
    """(the tag `docker build -t` gives in docker/Dockerfile.VARIANT, the
    image user's uid)."""
    with open(os.path.join(SRC, "docker", f"Dockerfile.{variant}"), encoding="utf-8") as f:
        text = f.read()
    tag = re.search(r"docker build -f docker/Dockerfile\.%s -t (\S+)" % variant, text)
    uid = re.search(r"useradd [^\n]*--uid (\d+)", text)
    return tag and tag.group(1), uid and int(uid.group(1))


def sleep_seconds(hook):
    cmd = (hook or {}).get("exec", {}).get("command", [])
    if len(cmd) == 2 and cmd[0] == "sleep":
        return int(cmd[1])
    return (hook or {}).get("sleep", {}).get("seconds", 0)


env_names = set()
pvcs = set(by_kind.get("PersistentVolumeClaim", {}))
for dname, dep in deps.items():
    variant = "cuda" if dname == "embd-gpu" else "cpu"
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    c.check(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
            f"{dname}: the selector does not match the pod labels")
    c.check(len(pod["containers"]) == 1, f"{dname}: {len(pod['containers'])} containers")
    ctr = pod["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
    c.check(ports.get("http") == port, f"{dname}: container port {ports} is not EMBD_PORT {port}")

    # Probes: GET /health on the container's port.
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        p = ctr.get(probe)
        if probe == "startupProbe" and p is None:
            continue
        get = (p or {}).get("httpGet", {})
        pport = ports.get(get.get("port")) if isinstance(get.get("port"), str) else get.get("port")
        c.check(get.get("path") == "/health" and pport == port,
                f"{dname}: {probe} asks {get.get('path')} on port {get.get('port')}")
    live = ctr.get("livenessProbe", {})
    c.check(live.get("periodSeconds", 10) * live.get("failureThreshold", 3) >
            pod.get("terminationGracePeriodSeconds", 30),
            f"{dname}: the liveness probe could restart a draining pod (503) before its grace "
            f"period ends")

    # GPU or not.
    res = ctr.get("resources", {})
    gpu_req = res.get("requests", {}).get("nvidia.com/gpu")
    gpu_lim = res.get("limits", {}).get("nvidia.com/gpu")
    if variant == "cuda":
        c.check(str(gpu_req) == "1" and str(gpu_lim) == "1",
                f"{dname}: nvidia.com/gpu request {gpu_req}, limit {gpu_lim} (want 1 and 1)")
    else:
        c.check(gpu_req is None and gpu_lim is None, f"{dname}: asks for a GPU")

    # The image docker/Dockerfile.<variant> builds, run as its user.
    tag, uid = dockerfile(variant)
    img = ctr.get("image", "")
    c.check(tag is not None and (img == tag or img.endswith("/" + tag)),
            f"{dname}: image {img!r} is not docker/Dockerfile.{variant}'s {tag!r}")
    c.check(pod.get("securityContext", {}).get("runAsUser") == uid,
            f"{dname}: runAsUser {pod.get('securityContext', {}).get('runAsUser')} is not the "
            f"image's uid {uid}")
    c.check(ctr.get("args", [""])[0] == "serve", f"{dname}: args {ctr.get('args')}")

    # Shutdown: preStop, and a grace period the drain and shutdown fit in.
    pre = sleep_seconds(ctr.get("lifecycle", {}).get("preStop"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    c.check(pre > 0, f"{dname}: no preStop sleep")
    c.check(grace > pre + shutdown,
            f"{dname}: terminationGracePeriodSeconds {grace} <= preStop {pre} s + "
            f"EMBD_SHUTDOWN_TIMEOUT {shutdown} s")

    # The ConfigMap, Secret and volumes it uses exist.
    refs = [e["configMapRef"]["name"] for e in ctr.get("envFrom", []) if "configMapRef" in e]
    c.check(refs == [cm["metadata"]["name"]], f"{dname}: envFrom {refs}")
    for e in ctr.get("env", []):
        env_names.add(e["name"])
        sk = e.get("valueFrom", {}).get("secretKeyRef")
        if sk:
            c.check(sk.get("optional") is True,
                    f"{dname}: {e['name']} needs a Secret {sk.get('name')} that is not here")
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    for m in ctr.get("volumeMounts", []):
        c.check(m["name"] in vols, f"{dname}: mounts an undefined volume {m['name']}")
        claim = vols.get(m["name"], {}).get("persistentVolumeClaim", {}).get("claimName")
        if claim:
            c.check(claim in pvcs, f"{dname}: claim {claim} is not in deploy/k8s")
    model = conf.get("EMBD_MODEL", "")
    c.check(any(model.startswith(m["mountPath"].rstrip("/") + "/")
                for m in ctr.get("volumeMounts", [])),
            f"{dname}: EMBD_MODEL {model} is not on a mounted volume")

# The Service selects both Deployments' pods, on the named port.
for sname, svc in by_kind.get("Service", {}).items():
    sel = svc["spec"].get("selector", {})
    for dname, dep in deps.items():
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        c.check(sel and all(labels.get(k) == v for k, v in sel.items()),
                f"Service {sname} does not select {dname}'s pods")
    tps = [p.get("targetPort") for p in svc["spec"]["ports"]]
    c.check(tps in (["http"], [port]), f"Service {sname}: targetPort {tps}")

# The autoscalers: each on an existing Deployment, on a gauge embd exports.
with open(os.path.join(SRC, "src", "server", "server.c"), encoding="utf-8") as f:
    metrics_src = f.read()
with open(os.path.join(SRC, "src", "engine", "metrics.c"), encoding="utf-8") as f:
    metrics_src += f.read()
targets = set()
for hname, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
    c.check(hpa["apiVersion"] == "autoscaling/v2", f"HPA {hname}: {hpa['apiVersion']}")
    ref = hpa["spec"]["scaleTargetRef"]
    c.check(ref["kind"] == "Deployment" and ref["name"] in deps,
            f"HPA {hname} targets {ref['kind']} {ref['name']}, not one of {sorted(deps)}")
    targets.add(ref["name"])
    for m in hpa["spec"].get("metrics", []):
        c.check(m["type"] == "Pods", f"HPA {hname}: a {m['type']} metric")
        name = m.get("pods", {}).get("metric", {}).get("name", "")
        c.check(f"# TYPE {name} gauge" in metrics_src,
                f"HPA {hname}: {name!r} is not a gauge of embd's /metrics")
c.check(targets == set(deps), f"the HPAs scale {sorted(targets)}, not {sorted(deps)}")

# Every EMBD_* variable is a flag of `embd serve`.
env_names |= {k for k in conf if k.startswith("EMBD_")}
if os.path.isfile(BIN) and os.access(BIN, os.X_OK):
    h = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True).stdout
    flags = set(re.findall(r"--([a-z][a-z0-9-]*)", h))
    for e in sorted(env_names):
        flag = e[len("EMBD_"):].lower().replace("_", "-")
        c.check(flag in flags, f"{e}: `embd serve` has no --{flag}")
else:
    print("EMBD_BIN not set: the EMBD_* variables are not checked against embd serve --help")
print(f"{len(docs)} documents valid for Kubernetes {K8S_VERSION} (strict); variables: "
      f"{', '.join(sorted(env_names))}")
c.done()

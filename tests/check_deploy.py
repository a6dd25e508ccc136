#!/usr/bin/env python3
"""The deploy/ manifests agree with the router's config and its outage policy.

No cluster and no Docker engine are needed: the manifests are read as YAML, and the
configs they carry are run through `tresor-router check-config`.

- Kubernetes (deploy/k8s): the ConfigMap's config passes check-config; the emptyDir the
  upload spool lives in has a sizeLimit above server.spool_max_bytes with a margin (past
  its sizeLimit the kubelet evicts the pod), and the pod's ephemeral-storage request
  covers its emptyDirs; liveness and startup probe /healthz (never a check of Redis, so an
  outage restarts nothing), readiness probes /readyz; the Redis password reaches the
  store URL only as ${REDIS_PASSWORD}, from a Secret.
- docker compose: each config passes check-config, and the /tmp tmpfs is above its spool
  cap with the same margin.

  check_deploy.py ROOT ROUTER_BINARY
"""
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("check_deploy.py needs PyYAML (apt-get install python3-yaml, or pip install pyyaml)")

DEFAULT_SPOOL_MAX = 1 << 30  # config/config.h
DEFAULT_SPOOL_DIR = "/tmp"   # $TMPDIR unset in the image
# Room past the cap for file-system overhead and anything else on the volume.
MIN_MARGIN = 0.10

KUBE_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
              "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
DOCKER_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def quantity(text):
    """A Kubernetes quantity (1280Mi, 2Gi, 500M) in bytes."""
    m = re.fullmatch(r"(\d+)(|k|M|G|T|Ki|Mi|Gi|Ti)", str(text).strip())
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return int(m.group(1)) * KUBE_UNITS[m.group(2)]


def docker_size(text):
    """A docker/compose tmpfs size (1280m, 1g) in bytes: binary units."""
    m = re.fullmatch(r"(\d+)([bkmg]?)", str(text).strip().lower())
    if not m:
        raise ValueError(f"not a tmpfs size: {text!r}")
    return int(m.group(1)) * DOCKER_UNITS[m.group(2)]


class Checks:
    def __init__(self):
        self.failures = []

    def expect(self, ok, message):
        if not ok:
            self.failures.append(message)
        return ok


def check_config(router, text, what, env, rewrite, checks):
    """check-config on a copy of `text` with host-only paths moved to a temp dir."""
    with tempfile.TemporaryDirectory(prefix="tresor-deploy-check-") as tmp:
        config = yaml.safe_load(text)
        rewrite(config, Path(tmp))
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        run_env = {k: v for k, v in os.environ.items() if k.startswith(("PATH", "LANG", "LC_"))}
        run_env.update(env)
        r = subprocess.run([router, "check-config", str(path)], cwd=tmp, env=run_env,
                           capture_output=True, text=True, timeout=60)
        checks.expect(r.returncode == 0, f"{what}: check-config failed: {r.stdout}{r.stderr}".strip())
        return config


def spool_settings(config):
    server = config.get("server") or {}
    return (server.get("upload_spool_dir") or DEFAULT_SPOOL_DIR,
            int(server.get("spool_max_bytes", DEFAULT_SPOOL_MAX)))


def expect_room(checks, what, size, spool_max):
    checks.expect(size >= spool_max * (1 + MIN_MARGIN),
                  f"{what}: {size} bytes is not above server.spool_max_bytes ({spool_max}) "
                  f"with a {int(MIN_MARGIN * 100)} % margin")


ENV = {
    "OPENAI_API_KEY": "sk-deploy-check",
    "TRESOR_KEY_SHA256": "ab" * 32,
    "REDIS_PASSWORD": "0123456789abcdef" * 4,
    "DEMO_UPSTREAM_KEY": "demo-upstream-key",
}


def k8s(root, router, checks):
    docs = []
    for f in sorted((root / "deploy" / "k8s").glob("*.yaml")):
        docs += [(f.name, d) for d in yaml.safe_load_all(f.read_text()) if d]
    by = {(d["kind"], d["metadata"]["name"]): (name, d) for name, d in docs if "metadata" in d}
    _, cm = by[("ConfigMap", "tresor-router-config")]
    _, deployment = by[("Deployment", "tresor-router")]
    text = cm["data"]["config.yaml"]
    raw = yaml.safe_load(text)

    # The store URL carries the password only as ${REDIS_PASSWORD}.
    store = raw.get("store")
    url = store["url"] if isinstance(store, dict) else store
    m = re.fullmatch(r"rediss?://([^:@/]*):([^@/]*)@[^/]+/\d+", url or "")
    if checks.expect(m is not None, f"configmap.yaml: the store URL {url!r} has no user:password@"):
        checks.expect(m.group(2) == "${REDIS_PASSWORD}",
                      f"configmap.yaml: the store URL's password is {m.group(2)!r}, not ${{REDIS_PASSWORD}}")

    def rewrite(config, tmp):
        # /etc/tresor/keys is the Secret's mount; the store URL's credentials are checked by
        # the store's own tests (a local SQLite file stands in so nothing is reached).
        config["receipts"]["signing_key_file"] = str(tmp / "keys" / "receipt-es256.pem")
        if "log" in config:
            config["log"]["key_file"] = str(tmp / "keys" / "log-ed25519.pem")
        config["store"] = f"sqlite:{tmp / 'state' / 'tresor.db'}"
    config = check_config(router, text, "deploy/k8s/configmap.yaml", ENV, rewrite, checks)
    spool_dir, spool_max = spool_settings(config)

    pod = deployment["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "tresor-router"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    spool_volume = volumes.get(mounts.get(spool_dir))
    if checks.expect(spool_volume is not None and "emptyDir" in spool_volume,
                     f"deployment.yaml: no emptyDir mounted at the spool dir {spool_dir}"):
        limit = (spool_volume["emptyDir"] or {}).get("sizeLimit")
        if checks.expect(limit is not None, "deployment.yaml: the spool emptyDir has no sizeLimit"):
            expect_room(checks, f"deployment.yaml: the spool emptyDir's sizeLimit {limit}", quantity(limit), spool_max)
    empty_dirs = sum(quantity((v["emptyDir"] or {}).get("sizeLimit", 0)) for v in volumes.values() if "emptyDir" in v)
    request = container["resources"]["requests"].get("ephemeral-storage")
    checks.expect(request is not None and quantity(request) >= empty_dirs,
                  f"deployment.yaml: ephemeral-storage request {request} is below the emptyDirs' sizeLimits ({empty_dirs})")

    def probe_path(name):
        probe = container.get(name)
        checks.expect(probe is not None, f"deployment.yaml: no {name}")
        return ((probe or {}).get("httpGet") or {}).get("path")
    checks.expect(probe_path("livenessProbe") == "/healthz", "deployment.yaml: livenessProbe must be GET /healthz")
    checks.expect(probe_path("startupProbe") == "/healthz", "deployment.yaml: startupProbe must be GET /healthz")
    checks.expect(probe_path("readinessProbe") == "/readyz", "deployment.yaml: readinessProbe must be GET /readyz")

    env = {e["name"]: e for e in container.get("env", [])}
    secret = ((env.get("REDIS_PASSWORD") or {}).get("valueFrom") or {}).get("secretKeyRef")
    checks.expect(secret is not None and "value" not in env.get("REDIS_PASSWORD", {}),
                  "deployment.yaml: REDIS_PASSWORD must come from a Secret (secretKeyRef)")


def compose(root, router, checks):
    spec = yaml.safe_load((root / "deploy" / "docker-compose.yml").read_text())
    tmpfs = {}
    for entry in spec["services"]["router"].get("tmpfs", []):
        path, _, opts = entry.partition(":")
        size = re.search(r"(?:^|,)size=([^,]+)", opts)
        tmpfs[path] = docker_size(size.group(1)) if size else None

    def rewrite(config, tmp):
        config["store"] = f"sqlite:{tmp / 'state' / 'tresor.db'}"  # the compose network's Redis
    for f in sorted((root / "deploy" / "compose").glob("*.yaml")):
        config = check_config(router, f.read_text(), f"deploy/compose/{f.name}", ENV, rewrite, checks)
        spool_dir, spool_max = spool_settings(config)
        size = tmpfs.get(spool_dir)
        if checks.expect(size is not None, f"docker-compose.yml: no sized tmpfs at {spool_dir} for {f.name}'s spool"):
            expect_room(checks, f"docker-compose.yml: the {spool_dir} tmpfs ({size} bytes) for {f.name}", size, spool_max)


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    root, router = Path(argv[1]), str(Path(argv[2]).resolve())
    checks = Checks()
    k8s(root, router, checks)
    compose(root, router, checks)
    for failure in checks.failures:
        print(failure)
    if checks.failures:
        return 1
    print("deploy/: manifests agree with the configs they carry")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env bash
# Builds the tresor-router image from the unchanged Dockerfile with podman (no Docker
# engine, no registry needed) and smoke-tests it:
#
#   1. packages    podman, buildah, debootstrap, runc, ... (apt-get, only when missing)
#   2. base        debian:bookworm and debian:bookworm-slim made locally with debootstrap
#                  (the mirror of this machine's apt sources) + the official images' apt
#                  tweaks, imported into podman; cached as tarballs in the work folder
#   3. build       podman build --pull=never --format docker --isolation chroot --network host
#   4. run         the fake upstream and the router from the image, host network, 127.0.0.1,
#                  free ports, a generated config mounted read-only, a state volume,
#                  read-only root file system, all capabilities dropped
#   5. smoke       GET /healthz 200, GET /readyz 200, a streamed chat completion
#                  (SSE data lines and data: [DONE]), GET /metrics (informational unless
#                  TRESOR_VERIFY_REQUIRE_METRICS=1), podman healthcheck run
#   6. inspect     image size, runtime user (image config and `id` inside)
#   7. drain       SIGTERM with a stream in flight: /readyz 503, the stream ends with
#                  [DONE], the container exits 0
#
# Every container and volume it started is removed on exit (trap). Exit status non-zero
# on any failure. Environment:
#   TRESOR_VERIFY_DIR            work folder and cache (default ~/.cache/tresor-verify-image):
#                                podman storage, base tarballs, the ccache of the image build
#   TRESOR_VERIFY_IMAGE          tag to build (default localhost/tresor-router:verify)
#   TRESOR_VERIFY_REFRESH_BASE=1 rebuild the Debian base images even when cached
#   TRESOR_VERIFY_MIRROR         Debian mirror (default: the first one in the apt sources)
#   TRESOR_VERIFY_REQUIRE_METRICS=1  fail when GET /metrics is not Prometheus text
#   TRESOR_VERIFY_BUILD_IMAGE    tag of the build stage (default localhost/tresor-router-build:verify)
#   TRESOR_VERIFY_KEEP_IMAGE=0   remove the built images at the end (default: keep, they are the cache)
# Operator guide: deploy/README.md.
set -Eeuo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${TRESOR_VERIFY_DIR:-${HOME:-/root}/.cache/tresor-verify-image}"
image="${TRESOR_VERIFY_IMAGE:-localhost/tresor-router:verify}"
build_image="${TRESOR_VERIFY_BUILD_IMAGE:-localhost/tresor-router-build:verify}"
suite=bookworm
tag="$$"
demo_key="tr-$(printf 'de%.0s' $(seq 48))"
demo_key_sha256="7dfbbcdfaebb8493682c57be4e5b7e4daf45ed967733695012c885a23afd69a3"

t_start=$(date +%s.%N)
phase_name=""
phase_start=""
timings=()
log() { printf '[verify-image] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
phase() {  # phase NAME: closes the previous phase (recording its time) and opens NAME
  local now; now=$(date +%s.%N)
  if [ -n "$phase_name" ]; then
    local d; d=$(awk -v a="$phase_start" -v b="$now" 'BEGIN{printf "%.1f", b-a}')
    timings+=("$(printf '%-10s %7ss' "$phase_name" "$d")")
    log "phase $phase_name done in ${d}s"
  fi
  phase_name="$1"; phase_start="$now"
  [ -n "$1" ] && log "== phase $1"
  return 0
}
print_timings() {
  local now total; now=$(date +%s.%N)
  total=$(awk -v a="$t_start" -v b="$now" 'BEGIN{printf "%.1f", b-a}')
  printf '\n[verify-image] timings:\n' >&2
  local t; for t in "${timings[@]}"; do printf '  %s\n' "$t" >&2; done
  printf '  %-10s %7ss\n' total "$total" >&2
}

# apt-get, debootstrap and rootful podman (hybrid cgroups, no user namespaces needed): root.
if [ "$(id -u)" -ne 0 ]; then
  log "not root: re-running with sudo"
  exec sudo --preserve-env=HOME,TRESOR_VERIFY_DIR,TRESOR_VERIFY_IMAGE,TRESOR_VERIFY_BUILD_IMAGE,TRESOR_VERIFY_REFRESH_BASE,TRESOR_VERIFY_MIRROR,TRESOR_VERIFY_REQUIRE_METRICS,TRESOR_VERIFY_KEEP_IMAGE \
    bash "$0" "$@"
fi

# podman without systemd cannot create the healthcheck's timer and says so on every
# run/stop of a container with a HEALTHCHECK; it is harmless here (the check is run by hand).
quiet_podman() {
  local err rc=0
  err=$(podman "$@" 2>&1 >/dev/null) || rc=$?
  [ -z "$err" ] || printf '%s\n' "$err" | grep -v 'systemd connection' >&2 || true
  return "$rc"
}

# ------------------------------------------------------------------------ cleanup
containers=()
volumes=()
rundir=""
rootfs=""
curl_pid=""
cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ] && ((${#containers[@]})); then
    local c; for c in "${containers[@]}"; do
      log "--- logs of $c (last 40 lines)"
      podman logs --tail 40 "$c" 2>&1 | sed 's/^/    /' >&2
    done
  fi
  [ -n "$curl_pid" ] && kill "$curl_pid" 2>/dev/null
  local c; for c in "${containers[@]}"; do podman rm -f -v -t 2 "$c" >/dev/null 2>&1; done
  local v; for v in "${volumes[@]}"; do podman volume rm -f "$v" >/dev/null 2>&1; done
  if [ -n "$rootfs" ] && [ -d "$rootfs" ]; then
    umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null
    rm -rf --one-file-system "$rootfs"
  fi
  [ -n "$rundir" ] && rm -rf "$rundir"
  if [ "${TRESOR_VERIFY_KEEP_IMAGE:-1}" = 0 ]; then podman rmi -f "$image" "$build_image" >/dev/null 2>&1; fi
  [ -n "$phase_name" ] && phase ""
  print_timings
  if [ "$rc" -eq 0 ]; then log "PASS"; else log "FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------------- packages
phase packages
packages=(podman buildah debootstrap fuse-overlayfs slirp4netns uidmap runc
          debian-archive-keyring ca-certificates curl tar gzip)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
podman --version >&2

# Private podman/buildah configuration: storage, tmp and network config under $work, the
# runc runtime (crun rejects hybrid cgroups), a nofile limit the host allows, host netns
# (the default bridge network would rewrite the host's firewall and ip_forward).
mkdir -p "$work"/{storage,run,tmp,net,base}
work="$(cd "$work" && pwd)"
nofile="$(ulimit -Hn)"
[ "$nofile" = unlimited ] && nofile=1048576
cgroup_manager=cgroupfs
[ -d /run/systemd/system ] && cgroup_manager=systemd
events_logger="file"
cat >"$work/containers.conf" <<EOF
# written by deploy/verify-image.sh
[containers]
netns = "host"
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "${cgroup_manager}"
events_logger = "${events_logger}"
tmp_dir = "${work}/tmp"

[network]
network_config_dir = "${work}/net"
EOF
cat >"$work/storage.conf" <<EOF
# written by deploy/verify-image.sh
[storage]
driver = "overlay"
runroot = "${work}/run"
graphroot = "${work}/storage"
EOF
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"
# buildah keeps RUN --mount=type=cache directories (the image build's ccache) under TMPDIR.
export TMPDIR="$work/tmp"

# --------------------------------------------------------------------------- base
phase base
mirror() {
  if [ -n "${TRESOR_VERIFY_MIRROR:-}" ]; then echo "$TRESOR_VERIFY_MIRROR"; return; fi
  local m=""
  # deb822 (.sources): the URIs of the first stanza whose Suites has the plain suite.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    m=$(awk -v s="$suite" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; ok = 0; en = 1
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
          if ($i ~ /^Suites:/)  { n = split($i, w, /[ \t]+/); for (j = 2; j <= n; j++) if (w[j] == s) ok = 1 }
          if ($i ~ /^Enabled:[ \t]*no/) en = 0
        }
        if (ok && en && uris != "") { print uris; exit }
      }' "$f")
    [ -n "$m" ] && break
  done
  if [ -z "$m" ]; then  # one-line format
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                                            if ($(i+1) == s) { print $i; exit } }')
  fi
  echo "${m:-http://deb.debian.org/debian}"
}
security_mirror() {  # the first uncommented security URI of the apt sources
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
      | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]*debian-security[^ ]*' | head -n1 || true)
  echo "${m:-http://deb.debian.org/debian-security}"
}

# The official image's tweaks (debuerreotype): docker-clean, no languages, gzip indexes,
# no suggests on autoremove, unsafe-io, policy-rc.d 101, empty hostname/resolv.conf, no
# apt lists or caches, empty logs; slim also excludes docs/man/locales from dpkg.
tweak_rootfs() {
  local r="$1" m="$2" sm="$3"
  case "$r" in "$work"/base/rootfs.*) ;; *) die "refusing to modify $r as a rootfs" ;; esac
  tee "$r/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' | tee "$r/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
  printf 'Acquire::GzipIndexes "true";\nAcquire::CompressionTypes::Order:: "gz";\n' \
    | tee "$r/etc/apt/apt.conf.d/docker-gzip-indexes" >/dev/null
  echo 'Apt::AutoRemove::SuggestsImportant "false";' \
    | tee "$r/etc/apt/apt.conf.d/docker-autoremove-suggests" >/dev/null
  echo 'force-unsafe-io' | tee "$r/etc/dpkg/dpkg.cfg.d/docker-apt-speedup" >/dev/null
  printf '#!/bin/sh\nexit 101\n' | tee "$r/usr/sbin/policy-rc.d" >/dev/null
  chmod 0755 "$r/usr/sbin/policy-rc.d"
  # The sources of the official image: the suite, its updates and security.
  rm -f "$r/etc/apt/sources.list"
  tee "$r/etc/apt/sources.list.d/debian.sources" >/dev/null <<EOF
Types: deb
URIs: ${m}
Suites: ${suite} ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${sm}
Suites: ${suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  truncate -s 0 "$r/etc/hostname" "$r/etc/resolv.conf"
  rm -f "$r/etc/machine-id" && touch "$r/etc/machine-id"
  rm -rf "${r:?}"/var/lib/apt/lists/* "${r:?}"/var/cache/apt/*.bin "${r:?}"/var/cache/apt/archives/*.deb \
         "${r:?}"/var/cache/apt/archives/partial/* "${r:?}"/var/cache/debconf/*-old "${r:?}"/var/lib/dpkg/*-old \
         "${r:?}"/tmp/* "${r:?}"/var/tmp/* "${r:?}"/dev/* "${r:?}"/proc/* "${r:?}"/sys/* "${r:?}"/run/*
  mkdir -p "$r/var/lib/apt/lists/partial"
  find "$r/var/log" -type f -exec truncate -s 0 {} +
}
slim_rootfs() {
  local r="$1"
  case "$r" in "$work"/base/rootfs.*) ;; *) die "refusing to modify $r as a rootfs" ;; esac
  tee "$r/etc/dpkg/dpkg.cfg.d/docker" >/dev/null <<'EOF'
# This is the "slim" variant of the Debian base image.
# Many files which are normally unnecessary in containers are excluded,
# and this configuration file keeps them that way.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$r"/usr/share/groff/* "$r"/usr/share/info/* "$r"/usr/share/linda/* \
               "$r"/usr/share/lintian/overrides/* "$r"/usr/share/man/*
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
}
import_base() {  # import_base TARBALL NAME (NAME = bookworm | bookworm-slim)
  podman import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$1" "localhost/debian:$2" >/dev/null
  podman tag "localhost/debian:$2" "docker.io/library/debian:$2"
}

base_full="$work/base/debian-$suite.tar"
base_slim="$work/base/debian-$suite-slim.tar"
if [ "${TRESOR_VERIFY_REFRESH_BASE:-0}" = 1 ]; then
  rm -f "$base_full" "$base_slim"
  podman rmi -f "localhost/debian:$suite" "docker.io/library/debian:$suite" \
    "localhost/debian:$suite-slim" "docker.io/library/debian:$suite-slim" >/dev/null 2>&1 || true
fi
if [ -s "$base_full" ] && [ -s "$base_slim" ]; then
  log "base tarballs cached in $work/base"
else
  m="$(mirror)"; sm="$(security_mirror)"
  log "debootstrap --variant=minbase $suite from $m (security: $sm)"
  rootfs="$work/base/rootfs.$tag"
  debootstrap --variant=minbase "$suite" "$rootfs" "$m" >"$work/base/debootstrap.log" 2>&1 \
    || { tail -20 "$work/base/debootstrap.log" >&2; die "debootstrap failed (log: $work/base/debootstrap.log)"; }
  umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
  tweak_rootfs "$rootfs" "$m" "$sm"
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$base_full.tmp" . && mv "$base_full.tmp" "$base_full"
  slim_rootfs "$rootfs"
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$base_slim.tmp" . && mv "$base_slim.tmp" "$base_slim"
  rm -rf --one-file-system "$rootfs"; rootfs=""
fi
for v in "$suite" "$suite-slim"; do
  if podman image exists "docker.io/library/debian:$v"; then
    log "debian:$v present in podman storage"
  else
    tarball="$base_full"; [ "$v" = "$suite-slim" ] && tarball="$base_slim"
    log "importing debian:$v from $tarball"
    import_base "$tarball" "$v"
  fi
done
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '/debian:' | sed 's/^/  /' >&2

# -------------------------------------------------------------------------- build
phase build
log "podman build -t $image $root (log: $work/build.log)"
# The build stage is tagged too (--target build, same Dockerfile): it stays in the layer
# cache when the dangling images of earlier builds are pruned below, which keeps the
# work folder at about 1 GB however often the sources change.
# build.log: every line with the time it was printed.
if ! { podman build --pull=never --format docker --isolation chroot --network host \
         --target build -t "$build_image" -f "$root/Dockerfile" "$root" \
       && podman build --pull=never --format docker --isolation chroot --network host \
         -t "$image" -f "$root/Dockerfile" "$root"; } 2>&1 \
     | while IFS= read -r line; do printf '%(%T)T %s\n' -1 "$line"; done >"$work/build.log"; then
  tail -60 "$work/build.log" >&2
  die "image build failed (full log: $work/build.log)"
fi
podman image prune -f >/dev/null || true
steps=$(grep -cE '^[0-9:]{8} (\[[0-9]/[0-9]\] )?STEP' "$work/build.log" || true)
cached=$(grep -c -- '--> Using cache' "$work/build.log" || true)
compiled=$(grep -cE '\[[0-9]+/[0-9]+\] Building CXX' "$work/build.log" || true)
log "build: $cached of $steps steps from the layer cache; $compiled C++ files compiled (ccache hits are quick)"

# ---------------------------------------------------------------------------- run
phase run
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {  # free_port [EXCLUDED]: a port nobody listens on, in 20000-59999
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    if [ "$p" != "${1:-}" ] && ! port_in_use "$p"; then echo "$p"; return 0; fi
  done
  return 1
}
fport=$(free_port) || die "no free port found"
rport=$(free_port "$fport") || die "no free port found"
rundir="$(mktemp -d "$work/tmp/run.XXXXXX")"
chmod 0755 "$rundir"

fake="tresor-verify-fake-$tag"
router="tresor-verify-router-$tag"
state="tresor-verify-state-$tag"

containers+=("$fake")
podman run -d --name "$fake" --network host --no-healthcheck --read-only --cap-drop ALL \
  --security-opt no-new-privileges --entrypoint /usr/local/bin/tresor-fake-upstream \
  "$image" --listen "127.0.0.1:$fport" --pace-ms 20 --chunks 5 \
  --content "Hello from the fake upstream inside the image." >/dev/null
for _ in $(seq 1 100); do
  podman logs "$fake" 2>/dev/null | grep -q "^LISTENING $fport" && break
  [ "$(podman inspect -f '{{.State.Running}}' "$fake")" = true ] || die "fake upstream exited"
  sleep 0.1
done
podman logs "$fake" 2>/dev/null | grep -q "^LISTENING $fport" || die "fake upstream not listening on $fport"
log "fake upstream listening on 127.0.0.1:$fport"

# A config as an operator would write it: provider key from the environment (${VAR}),
# the default SQLite store and signing key under state/ (the volume).
cat >"$rundir/config.yaml" <<EOF
# generated by deploy/verify-image.sh
server:
  listen: "127.0.0.1:${rport}"
  threads: 2
  drain_notice_seconds: 1   # /readyz 503 for 1 s before the listener closes
  drain_seconds: 15
timeouts:
  connect_ms: 2000
providers:
  demo:
    base_url: "http://127.0.0.1:${fport}/v1"
    api_key: "\${DEMO_UPSTREAM_KEY}"
    max_connections: 16
routes:
  - id: "eu/demo/gpt-oss-120b"
    provider: demo
    upstream_model: "openai/gpt-oss-120b"
    type: chat
    pricing: {input_per_mtok: 0.2, output_per_mtok: 0.6, currency: eur}
  - id: "eu/demo/slow"          # a 3 s stream (fake upstream fault keys in the model name)
    provider: demo
    upstream_model: "openai/slow?pace_ms=250&chunks=12"
    type: chat
auth:
  keys:
    - sha256: "${demo_key_sha256}"
      customer: "demo"
store: "sqlite:state/tresor.db"
EOF
chmod 0644 "$rundir/config.yaml"

podman run --rm --network host --no-healthcheck --entrypoint /usr/local/bin/tresor-router \
  -v "$rundir/config.yaml:/etc/tresor/config.yaml:ro" -e DEMO_UPSTREAM_KEY=demo-upstream-key \
  "$image" check-config /etc/tresor/config.yaml >&2 || die "check-config rejected the generated config"

podman volume create "$state" >/dev/null
volumes+=("$state")
containers+=("$router")
# No systemd here to time the image's HEALTHCHECK: it is run by hand below.
quiet_podman run -d --name "$router" --network host --read-only --cap-drop ALL \
  --security-opt no-new-privileges --health-interval disable \
  -v "$rundir/config.yaml:/etc/tresor/config.yaml:ro" \
  -v "$state:/var/lib/tresor/state" \
  -e DEMO_UPSTREAM_KEY=demo-upstream-key \
  -e "TRESOR_HEALTHCHECK_URL=http://127.0.0.1:$rport/healthz" \
  "$image"
url="http://127.0.0.1:$rport"
up=0
for _ in $(seq 1 150); do
  if curl -fsS -o /dev/null --max-time 1 "$url/healthz" 2>/dev/null; then up=1; break; fi
  [ "$(podman inspect -f '{{.State.Running}}' "$router")" = true ] || die "router container exited"
  sleep 0.2
done
[ "$up" = 1 ] || die "router did not answer /healthz on $url within 30 s"
log "router listening on $url"

# -------------------------------------------------------------------------- smoke
phase smoke
expect_status() {  # expect_status PATH CODE
  local code body
  body="$rundir/body"
  code=$(curl -sS -o "$body" -w '%{http_code}' --max-time 5 "$url$1") || die "GET $1: curl failed"
  [ "$code" = "$2" ] || die "GET $1: HTTP $code, expected $2: $(head -c 300 "$body")"
  log "GET $1 -> $code $(head -c 120 "$body" | tr -d '\n')"
}
expect_status /healthz 200
expect_status /readyz 200

stream="$rundir/stream.txt"
code=$(curl -sS -N --max-time 30 -o "$stream" -w '%{http_code} %{content_type}' "$url/v1/chat/completions" \
  -H "Authorization: Bearer $demo_key" -H 'Content-Type: application/json' \
  -d '{"model":"gpt-oss-120b","stream":true,"messages":[{"role":"user","content":"Hello!"}]}') \
  || die "streamed chat: curl failed"
[ "${code%% *}" = 200 ] || die "streamed chat: HTTP $code: $(head -c 400 "$stream")"
case "$code" in *text/event-stream*) ;; *) die "streamed chat: content type '$code', expected text/event-stream" ;; esac
chunks=$(grep -c '^data: {' "$stream" || true)
[ "$chunks" -ge 2 ] || die "streamed chat: $chunks data events: $(head -c 400 "$stream")"
[ "$(grep '^data: ' "$stream" | tail -n1 | tr -d '\r')" = "data: [DONE]" ] \
  || die "streamed chat: the last event is not data: [DONE]"
grep -q '"finish_reason":"stop"' "$stream" || die "streamed chat: no finish chunk"
grep -q '"routed_model":"eu/demo/gpt-oss-120b"' "$stream" || die "streamed chat: no tresor member on the finish chunk"
content=$(grep '^data: {' "$stream" | grep -o '"content":"[^"]*"' | cut -d'"' -f4 | tr -d '\n')
log "streamed chat -> 200, $chunks data events + [DONE]: \"$content\""

mcode=$(curl -sS -o "$rundir/metrics" -w '%{http_code}' --max-time 5 "$url/metrics" || true)
if [ "$mcode" = 200 ] && grep -q '^tresor_requests_total' "$rundir/metrics"; then
  log "GET /metrics -> 200, $(grep -c '^tresor_' "$rundir/metrics") tresor_ samples"
elif [ "${TRESOR_VERIFY_REQUIRE_METRICS:-0}" = 1 ]; then
  die "GET /metrics -> $mcode, expected Prometheus text with tresor_requests_total"
else
  log "GET /metrics -> $mcode (not served yet; informational)"
fi

podman exec "$router" test -s state/receipt-es256.pem || die "no signing key in the state volume"
podman exec "$router" test -s state/tresor.db || die "no SQLite store in the state volume"
log "state volume holds receipt-es256.pem and tresor.db"

if out=$(podman healthcheck run "$router" 2>&1); then
  log "podman healthcheck run -> healthy ${out}"
else
  die "podman healthcheck run: $out"
fi

# ------------------------------------------------------------------------ inspect
phase inspect
size=$(podman image inspect -f '{{.Size}}' "$image")
user=$(podman image inspect -f '{{.Config.User}}' "$image")
idout=$(podman run --rm --network host --no-healthcheck --entrypoint id "$image")
hc=$(podman image inspect -f '{{json .Config.Healthcheck}}' "$image" 2>/dev/null || echo '?')
stopsig=$(podman image inspect -f '{{.Config.StopSignal}}' "$image" 2>/dev/null || echo '?')
case "$idout" in uid=0\(*) die "the image runs as root: $idout" ;; esac
log "image $image: $(awk -v s="$size" 'BEGIN{printf "%.1f MB", s/1e6}') ($size bytes)"
log "runtime user: USER=$user; id: $idout"
log "healthcheck: $hc; stop signal: $stopsig"
podman image inspect -f '{{.Config.Entrypoint}} workdir={{.Config.WorkingDir}} env={{.Config.Env}}' "$image" >&2

# -------------------------------------------------------------------------- drain
# SIGTERM (the image's STOPSIGNAL) while a 3 s stream is in flight: /readyz turns 503,
# the stream still finishes with [DONE], the router exits 0.
phase drain
slow="$rundir/slow.txt"
curl -sS -N --max-time 40 -o "$slow" "$url/v1/chat/completions" \
  -H "Authorization: Bearer $demo_key" -H 'Content-Type: application/json' \
  -d '{"model":"eu/demo/slow","stream":true,"messages":[{"role":"user","content":"Hello!"}]}' &
curl_pid=$!
for _ in $(seq 1 100); do grep -q '^data: {' "$slow" 2>/dev/null && break; sleep 0.1; done
grep -q '^data: {' "$slow" || die "drain: the slow stream did not start"
t0=$(date +%s.%N)
stopsig=$(podman image inspect -f '{{.Config.StopSignal}}' "$image")
quiet_podman kill --signal "${stopsig:-SIGTERM}" "$router"
rcode=000
for _ in $(seq 1 10); do
  rcode=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url/readyz" || true)
  [ "$rcode" = 503 ] && break
  sleep 0.05
done
[ "$rcode" = 503 ] || die "drain: /readyz answered $rcode after $stopsig, expected 503"
log "$stopsig sent with a stream in flight: GET /readyz -> 503"
wait "$curl_pid" || die "drain: the in-flight stream failed: $(tail -c 300 "$slow")"
[ "$(grep '^data: ' "$slow" | tail -n1 | tr -d '\r')" = "data: [DONE]" ] \
  || die "drain: the in-flight stream was cut: $(tail -c 300 "$slow")"
log "in-flight stream finished: $(grep -c '^data: {' "$slow") data events + [DONE]"
timeout 30 podman wait "$router" >/dev/null 2>&1 || die "drain: the router did not exit within 30 s"
rc=$(podman inspect -f '{{.State.ExitCode}}' "$router")
log "router exited $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s after $stopsig, exit code $rc"
[ "$rc" = 0 ] || die "drain: router exit code $rc, expected 0"
podman logs --tail 4 "$router" 2>&1 | grep -v ' access {' | sed 's/^/    /' >&2 || true
phase ""

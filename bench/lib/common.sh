# Helpers sourced by bench/run.sh.

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# A free 127.0.0.1 TCP port (bind to 0, read it back; tiny race, fine on loopback).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL [seconds]: until the URL answers any HTTP status.
wait_http() {
  local url=$1 limit=${2:-10} i
  for ((i = 0; i < limit * 20; i++)); do
    if curl -s -o /dev/null -m 1 "$url"; then return 0; fi
    sleep 0.05
  done
  return 1
}

# PIDs of a process and its direct children (nginx master + workers).
pid_tree() {
  local p=$1
  echo "$p"
  pgrep -P "$p" || true
}

# Sum of on-CPU time (ns, first field of schedstat) over every thread of the given PIDs.
cpu_ns() {
  local total=0 p f v
  for p in "$@"; do
    for f in /proc/"$p"/task/*/schedstat; do
      [[ -r $f ]] || continue
      read -r v _ < "$f" 2>/dev/null || continue
      total=$((total + v))
    done
  done
  echo "$total"
}

# render TEMPLATE OUT KEY=VALUE...: replace @KEY@ with VALUE.
render() {
  local tmpl=$1 out=$2; shift 2
  python3 - "$tmpl" "$out" "$@" <<'PY'
import sys
src, dst, *pairs = sys.argv[1:]
text = open(src).read()
for p in pairs:
    k, v = p.split("=", 1)
    text = text.replace("@" + k + "@", v)
if "@" in "".join(l for l in text.splitlines() if not l.lstrip().startswith("#")):
    import re
    left = set(re.findall(r"@[A-Z_0-9]+@", text))
    if left:
        sys.exit("unrendered placeholders in %s: %s" % (src, left))
open(dst, "w").write(text)
PY
}

# VmRSS / VmHWM (kB) of a process, from /proc/PID/status ("-" if gone).
vm_kb() { # PID FIELD
  awk -v f="$2:" '$1 == f {print $2; found=1} END {if (!found) print "-"}' "/proc/$1/status" 2>/dev/null || echo -
}

# wait_line FILE REGEX SECONDS: until a line of FILE matches (grep -E).
wait_line() {
  local f=$1 re=$2 limit=${3:-10} i
  for ((i = 0; i < limit * 20; i++)); do
    grep -Eq "$re" "$f" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# wait_stable_binary PATH SECONDS: until PATH exists, is executable and its size and
# mtime stayed the same for 2 s (another engineer may be relinking build/ meanwhile).
wait_stable_binary() {
  local p=$1 limit=${2:-180} t=0 a b
  while ((t < limit)); do
    if [[ -x $p ]]; then
      a=$(stat -c '%s %Y' "$p" 2>/dev/null); sleep 2; t=$((t + 2))
      b=$(stat -c '%s %Y' "$p" 2>/dev/null)
      [[ -n $a && $a == "$b" && -x $p ]] && return 0
    else
      sleep 2; t=$((t + 2))
    fi
    log "waiting for $p (missing or being relinked)"
  done
  return 1
}

#!/usr/bin/env bash
# Builds and starts the gateway on deploy/examples/demo.yaml, in front of our fake
# upstream, so a chat answer streams through with no provider key. Ctrl-C stops both.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${TRESOR_BUILD_DIR:-$root/build}"
export TRESOR_BUILD_DIR="$build"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"

# The demo key is public and only accepted by demo.yaml.
demo_key="tr-$(printf 'de%.0s' $(seq 48))"
"$build/tresor-fake-upstream" --listen 127.0.0.1:9100 --pace-ms 150 --chunks 8 \
  --content "Hello! This answer streamed from the demo upstream through tresor-router." >/dev/null &
fake=$!
trap 'kill $fake 2>/dev/null' EXIT
cat <<MSG

tresor-router demo: http://127.0.0.1:8080/v1   key: $demo_key
Try, in another terminal:
  curl -N http://127.0.0.1:8080/v1/chat/completions -H "Authorization: Bearer $demo_key" \\
    -H "Content-Type: application/json" \\
    -d '{"model":"gpt-oss-120b","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'
  espeak-ng -w /tmp/meeting.wav "Hello from the meeting"
  curl http://127.0.0.1:8080/v1/audio/transcriptions -H "Authorization: Bearer $demo_key" \\
    -F model=auto/auto/whisper-large-v3 -F file=@/tmp/meeting.wav

MSG
"$build/tresor-router" --config "$root/deploy/examples/demo.yaml"

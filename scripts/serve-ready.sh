# Sourced by the bench scripts: start_server LOG ARGS... starts `speechflow serve ARGS...` in the background
# (its pid in $server, killed on exit) and waits until /readyz answers 200 (bounded: 5 minutes).
start_server() {
  local log=$1
  shift
  "$BIN/speechflow" serve "$@" > "$log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null' EXIT
  for _ in $(seq 600); do
    curl -sf "$url/readyz" >/dev/null && return 0
    sleep 0.5
  done
  echo "server did not become ready: $log"
  exit 1
}

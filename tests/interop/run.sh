#!/usr/bin/env bash
# Interoperability check: a real `sandbox-host run` with the demo integration in its sandbox,
# driven over Home Assistant's WebSocket API by home-assistant-js-websocket (the npm package
# Home Assistant's frontend uses), pinned by package-lock.json beside this script.
# Needs cargo, node and npm with registry access; leaves no process or temp dir behind.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
workspace="$(cd "$here/../.." && pwd)"

# Hang guards only: a loaded 2-core machine needs a few seconds for each.
readonly WAIT_SECONDS=90
readonly STOP_SECONDS=30

echo "building sandbox-host"
cargo build --quiet -p sandbox-host-cli --manifest-path "$workspace/Cargo.toml"

config="$(mktemp -d)"
client="$(mktemp -d)"
hub_pid=""
hub_exit=""
hub_log="$config/hub.log"

stop_hub() {
    if [[ -n "$hub_pid" ]] && kill -0 "$hub_pid" 2>/dev/null; then
        kill -TERM "$hub_pid" 2>/dev/null || true
        for _ in $(seq $((STOP_SECONDS * 10))); do
            kill -0 "$hub_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$hub_pid" 2>/dev/null; then
            echo "the hub did not stop within ${STOP_SECONDS}s after SIGTERM; killing it" >&2
            kill -KILL "$hub_pid" 2>/dev/null || true
        fi
        hub_exit=0
        wait "$hub_pid" 2>/dev/null || hub_exit=$?
    fi
    hub_pid=""
}

cleanup() {
    local code=$?
    stop_hub
    if [[ $code -ne 0 && -f "$hub_log" ]]; then
        echo "--- the hub's log" >&2
        tail -n 50 "$hub_log" >&2 || true
    fi
    rm -rf "$config" "$client"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

hub() {
    "$program" "$@" --config "$config"
}

wait_until() {
    local what="$1"
    shift
    for _ in $(seq $((WAIT_SECONDS * 10))); do
        if "$@"; then
            return 0
        fi
        sleep 0.1
    done
    echo "timed out after ${WAIT_SECONDS}s waiting for $what" >&2
    return 1
}

# Prints a JavaScript expression's value over the JSON read on stdin (named `s`); fails when
# it is null or undefined. Node is needed anyway, jq may not be there.
json_eval() {
    node -e '
        let text = "";
        process.stdin.on("data", (chunk) => (text += chunk)).on("end", () => {
            const value = new Function("s", "return " + process.argv[1])(JSON.parse(text));
            if (value === undefined || value === null) process.exit(1);
            console.log(value);
        });' "$1"
}

target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$workspace/Cargo.toml" |
    json_eval 's.target_directory')"
program="$target_dir/debug/sandbox-host"

printf '[listen]\nhttp = "127.0.0.1:0"\n' >"$config/sandbox-host.toml"
"$program" run --config "$config" </dev/null >/dev/null 2>"$hub_log" &
hub_pid=$!

status_answers() { hub status >/dev/null 2>&1; }
wait_until "the hub's control socket" status_answers

status_json() { hub status --json; }

address="$(status_json | json_eval 's.http_address')"
token="$(hub token create interop)"
hub add demo --data next_step_id=defaults >/dev/null
demo_running() {
    [[ "$(status_json | json_eval 's.groups.find(g=>g.name==="built-in"&&g.state==="running")?.entities??0')" -gt 0 ]]
}
wait_until "the demo's entities in the built-in sandbox group" demo_running

echo "installing home-assistant-js-websocket (package-lock.json)"
cp "$here/package.json" "$here/package-lock.json" "$here/ha-js-websocket.mjs" "$client/"
npm ci --prefix "$client" --no-audit --no-fund --loglevel=error >/dev/null

code=0
HUB_URL="http://$address" HUB_TOKEN="$token" node "$client/ha-js-websocket.mjs" || code=$?
stop_hub
if [[ "$hub_exit" != 0 ]]; then
    echo "the hub exited with $hub_exit after SIGTERM" >&2
    [[ $code -ne 0 ]] || code=1
fi
exit "$code"

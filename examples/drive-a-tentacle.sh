#!/usr/bin/env bash
# `octopoll node` driving a Tentacle through its control API, step by step:
# one mock Octopus node, one polling Tentacle set up with Tentacle.exe's own
# commands, then requests sent to it by hand with curl and their answers read
# back as JSON.
#
#   examples/drive-a-tentacle.sh                 # builds nothing: uses target/debug/octopoll
#   OCTOPOLL=target/release/octopoll examples/drive-a-tentacle.sh
#   TENTACLE="octopoll tentacle" …               # the Tentacle's command line (the default)
#
# The Tentacle here is `octopoll tentacle`, which takes Tentacle.exe's commands
# and options as written. Any Tentacle that polls the node with a registered
# certificate is driven the same way from step 4 on: register its thumbprint and
# `poll://…/` subscription with the node's `POST /api/machines` (Octopus's
# MachineResource, PascalCase), trust the node's thumbprint, and point it at
# the comms address. Everything listens on 127.0.0.1 on free ports and stops
# when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

OCTOPOLL=${OCTOPOLL:-target/debug/octopoll}
[ -x "$OCTOPOLL" ] || { echo "no $OCTOPOLL: run 'cargo build' first (or set OCTOPOLL)" >&2; exit 1; }
TENTACLE=${TENTACLE:-"$OCTOPOLL tentacle"}
API_KEY=API-DRIVEATENTACLEEXAMPLE
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
# The value of "key":"value" in a one-line JSON text.
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }

step "1. the cluster's certificate, and a cluster file for one node on free ports"
"$OCTOPOLL" certs --out "$work/certs" >/dev/null
cat >"$work/cluster.toml" <<TOML
name = "example"
certificate = "certs/node.crt.pem"
private_key = "certs/node.key.pem"
long_poll = "10s"
pickup_timeout = "20s"

[[nodes]]
comms = "127.0.0.1:0"
api = "127.0.0.1:0"
control = "127.0.0.1:0"
TOML

step "2. the node: it prints one JSON line when ready, with its three addresses"
OCTOPOLL_API_KEY=$API_KEY "$OCTOPOLL" node --cluster-file "$work/cluster.toml" --node 1 \
  >"$work/node.out" 2>"$work/node.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '"control"' "$work/node.out" 2>/dev/null && break; sleep 0.1; done
ready=$(head -n 1 "$work/node.out")
echo "$ready"
comms=$(field comms <<<"$ready"); api=$(field api <<<"$ready"); control=$(field control <<<"$ready")
[ -n "$control" ] || { echo "the node did not start:" >&2; cat "$work/node.log" >&2; exit 1; }

step "3. the Tentacle, as the Octopus docs set up a polling one"
export OCTOPOLL_TENTACLE_INSTANCES="$work/instances"
$TENTACLE create-instance --instance Example --config "$work/Tentacle.config"
$TENTACLE new-certificate --instance Example
$TENTACLE configure --instance Example --noListen True
$TENTACLE register-with --instance Example --server "https://$api" --apikey $API_KEY \
  --comms-style TentacleActive --server-comms-address "https://$comms" --name example-tentacle \
  --environment Test --role demo
$TENTACLE agent --instance Example >"$work/tentacle.log" 2>&1 &
pids+=($!)

step "4. wait until the node sees it polling: GET /api/node/pairs"
for _ in $(seq 100); do
  pairs=$(curl -sf "http://$control/api/node/pairs")
  grep -q '"polling"' <<<"$pairs" && break
  sleep 0.1
done
echo "$pairs"
subscription=$(field subscription <<<"$pairs")
[ -n "$subscription" ] || { echo "the Tentacle never polled; its log:" >&2; cat "$work/tentacle.log" >&2; exit 1; }

# One request: POST /api/requests with the API key, written as a call. The answer
# says how it ended (failed: null), how long it waited to be collected, and the
# reply's result as JSON.
send() {
  curl -sf -XPOST "http://$control/api/requests" -H "X-Octopus-ApiKey: $API_KEY" \
    -H 'Content-Type: application/json' \
    -d "{\"subscription\":\"$subscription\",\"call\":$1}"
}

step "5. IEchoService.SayHello: the Tentacle answers through the node"
echo_reply=$(send '{"service":"IEchoService","method":"SayHello","params":["from the example"]}')
echo "$echo_reply"
grep -q '"failed":null' <<<"$echo_reply"
grep -q '"result":"from the example...' <<<"$echo_reply"

step "6. ICapabilitiesServiceV2.GetCapabilities: what Octopus asks in a health check"
capabilities=$(send '{"service":"ICapabilitiesServiceV2","method":"GetCapabilities","params":[]}')
echo "$capabilities"
grep -q 'IScriptServiceV2' <<<"$capabilities"

step "7. a method the Tentacle does not have: it answers with an error, which says so"
missing=$(send '{"service":"IEchoService","method":"NoSuchMethod","params":[]}')
echo "$missing"
grep -q '"failed":"agent-error"' <<<"$missing"
grep -q '"error":"Method .*not found"' <<<"$missing"

step "8. a bad request is refused with a reason, and the node goes on"
status=$(curl -s -o "$work/refused.json" -w '%{http_code}' -XPOST "http://$control/api/requests" \
  -H "X-Octopus-ApiKey: $API_KEY" -H 'Content-Type: application/json' \
  -d "{\"subscription\":\"$subscription\"}")
echo "$status $(cat "$work/refused.json")"
[ "$status" = 400 ]
send '{"service":"IEchoService","method":"SayHello","params":["still here"]}' | grep -q '"failed":null'

step "9. the node's view: GET /api/node"
curl -sf "http://$control/api/node"
echo
echo "done: the node drove the Tentacle; both stop now"

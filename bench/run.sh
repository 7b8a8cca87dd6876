#!/usr/bin/env bash
# Tessera's load benchmark. See bench/README.md.
#
#   bench/run.sh               # on SQLite
#   bench/run.sh --postgres    # on PostgreSQL (BENCH_POSTGRES_URL)
#   bench/run.sh --pgo         # both servers built by bench/pgo.sh
#
# Settings (environment): BENCH_DURATION seconds per run (10),
# BENCH_CONNECTIONS (64), BENCH_ROUNDS of the interleaved headline comparison
# (3), BENCH_TENANTS extra tenants for the last run (10000, 0 to skip),
# BENCH_PIN=1 to pin the server to CPU 0 and wrk to CPU 1, BENCH_PEER_DIR,
# BENCH_PACED_SHARE: the fixed rate of the paced run of scenario 1, as a
# share of the limit's throughput (0.5; 0 to skip). BENCH_BIN_DIR: run the
# tessera and bench-limit binaries found there instead of building them
# (bench/pgo.sh's training pass); bench-fixtures is still built.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
root=$(pwd)

DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
THREADS=2
ROUNDS=${BENCH_ROUNDS:-3}
EXTRA_TENANTS=${BENCH_TENANTS:-10000}
PEER_DIR=${BENCH_PEER_DIR:-$root/../shared/peers/node-oidc-provider}
# Single-use credentials minted per second of a run: more than the server
# can consume, so that none is sent twice.
SINGLE_USE_PER_SECOND=${BENCH_SINGLE_USE_PER_SECOND:-40000}
PACED_SHARE=${BENCH_PACED_SHARE:-0.5}
paced_run_wanted() { python3 -c 'import sys; sys.exit(float(sys.argv[1]) <= 0)' "$PACED_SHARE"; }
BACKEND=sqlite
PGO=0
for arg in "$@"; do
  case $arg in
    --postgres) BACKEND=postgres ;;
    --pgo) PGO=1 ;;
    *) echo "usage: bench/run.sh [--postgres] [--pgo]" >&2; exit 2 ;;
  esac
done

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
if paced_run_wanted && ! command -v oha >/dev/null 2>&1; then
  echo "installing oha (cargo install, a few minutes)" >&2
  # Pinned: its flags and JSON have changed between versions.
  cargo install -q --locked oha --version 1.16.0
fi

if [ -n "${BENCH_BIN_DIR:-}" ] && [ "$PGO" = 1 ]; then
  echo "--pgo builds its own binaries: unset BENCH_BIN_DIR" >&2
  exit 2
fi
echo "building (release)" >&2
if [ -n "${BENCH_BIN_DIR:-}" ] || [ "$PGO" = 1 ]; then
  # The servers come from elsewhere; only the fixture tool is built here.
  cargo build --release -q -p bench-fixtures
else
  cargo build --release -q -p tessera -p bench-limit -p bench-fixtures
fi
fixtures=$root/target/release/bench-fixtures
bin=$root/target/release
build="release"
if [ -n "${BENCH_BIN_DIR:-}" ]; then
  bin=$BENCH_BIN_DIR
  build="binaries of $bin"
elif [ "$PGO" = 1 ]; then
  pgo_args=()
  if [ "$BACKEND" = postgres ]; then pgo_args=(--postgres); fi
  bin=$(bash "$root/bench/pgo.sh" "${pgo_args[@]}")
  build="release with profile-guided optimisation (bench/pgo.sh), both servers"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$BACKEND" = postgres ]; then
    psql -q "$BENCH_PG_ADMIN" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$BACKEND" = postgres ]; then
  BENCH_PG_ADMIN=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
  schema=bench_$$
  psql -q "$BENCH_PG_ADMIN" -c "CREATE SCHEMA $schema" >/dev/null
  export TESSERA_DATABASE_URL="$BENCH_PG_ADMIN?options=-c%20search_path%3D$schema"
else
  export TESSERA_DATABASE_URL="sqlite://$work/bench.db"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
basic() { printf 'Basic %s' "$(printf '%s:%s' "$1" "$2" | base64 -w0)"; }
pin_server=()
pin_wrk=()
if [ "${BENCH_PIN:-0}" = 1 ]; then pin_server=(taskset -c 0); pin_wrk=(taskset -c 1); fi

# --- Provisioning, through the CLI --------------------------------------
t() { "$bin/tessera" "$@"; }
t tenant create bench --json >/dev/null
t scope create --tenant bench read >/dev/null
printf 'pw\n' | t user create --tenant bench --username bench --password-stdin >/dev/null
cc=$(t client create --tenant bench --name cc --type m2m --scope read --json)
cc_opaque=$(t client create --tenant bench --name cc-opaque --type m2m --scope read --token-format opaque --json)
resource=$(t client create --tenant bench --name api --type m2m --json)
web=$(t client create --tenant bench --name web --type web --scope read \
  --redirect-uri http://127.0.0.1:9999/cb --json)
cc_auth=$(basic "$(echo "$cc" | field client_id)" "$(echo "$cc" | field client_secret)")
opaque_auth=$(basic "$(echo "$cc_opaque" | field client_id)" "$(echo "$cc_opaque" | field client_secret)")
resource_auth=$(basic "$(echo "$resource" | field client_id)" "$(echo "$resource" | field client_secret)")
web_id=$(echo "$web" | field client_id)
web_auth=$(basic "$web_id" "$(echo "$web" | field client_secret)")

# start_server: starts Tessera on a new port; sets server, base, startup_ms.
start_server() {
  local port start
  port=$(free_port)
  start=$(date +%s%N)
  "${pin_server[@]}" "$bin/tessera" serve --bind "127.0.0.1:$port" 2>>"$work/tessera.log" &
  server=$!
  pids+=("$server")
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do :; done
  startup_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  base="http://127.0.0.1:$port"
}
# stop_server: SIGTERM, then waits for the final checkpoint and the exit.
stop_server() { kill "$server"; wait "$server" || true; }

# --- Start-up time and idle memory --------------------------------------
start_server
sleep 1
idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$server/status")
first_startup_ms=$startup_ms

# --- Runs ----------------------------------------------------------------
# run URL PATH AUTH BODY [BODIES_FILE] [PID]: one wrk run; prints the JSON
# figures, with the peak RSS and the CPU time of PID during the run.
run() {
  local url=$1 path=$2 auth=$3 body=$4 bodies=${5:-} pid=${6:-}
  local cpu=0 host
  if [ -n "$pid" ]; then echo 5 > "/proc/$pid/clear_refs"; cpu=$(cpu_ticks "$pid"); fi
  host=$(host_ticks)
  local out
  out=$(BENCH_PATH="$path" BENCH_AUTH="$auth" BENCH_BODY="$body" BENCH_BODIES="$bodies" \
    BENCH_THREADS=$THREADS "${pin_wrk[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" \
    -s "$root/bench/lua/post.lua" "$url" | sed -n 's/^BENCH //p')
  with_peak "$out" "$host" "$pid" "$cpu"
}

# paced URL PATH AUTH BODY RATE PID: one oha run at a fixed RATE of requests
# per second; prints the figures as run does. wrk keeps every connection
# busy, so its latencies are mostly queueing at saturation; oha sends each
# request when it is due, and --latency-correction counts it from then even
# if a connection was still busy (no coordinated omission). -w: requests
# still open at the end are waited for, not counted as errors.
paced() {
  local url=$1 path=$2 auth=$3 body=$4 rate=$5 pid=$6
  echo 5 > "/proc/$pid/clear_refs"
  local cpu host
  cpu=$(cpu_ticks "$pid")
  host=$(host_ticks)
  local out
  out=$("${pin_wrk[@]}" oha --no-tui --output-format json --stats-success-breakdown -w \
    -z "${DURATION}s" -c "$CONNECTIONS" -q "$rate" --latency-correction -m POST \
    -T application/x-www-form-urlencoded -H "Authorization: $auth" -d "$body" "$url$path" |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
ok = d["statusCodeDistribution"].get("200", 0)
if ok == 0:
    sys.exit(f"no request succeeded at a fixed rate: {d}")
sent = sum(d["statusCodeDistribution"].values()) + sum(d["errorDistribution"].values())
p = d["latencyPercentilesSuccessful"]
print(json.dumps({"requests": sent, "seconds": d["summary"]["total"],
                  "rps": sent / d["summary"]["total"], "rate": int(sys.argv[1]),
                  "p50_ms": p["p50"] * 1000, "p99_ms": p["p99"] * 1000,
                  "errors": sent - ok}))' "$rate")
  with_peak "$out" "$host" "$pid" "$cpu"
}

# cpu_ticks PID: the user and system time of every thread of PID so far, in
# clock ticks (fields 14 and 15 of /proc/PID/stat, counted after the
# command name, which may hold spaces).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# host_ticks: the machine's stolen and total CPU time so far, in clock
# ticks (the first line of /proc/stat: steal is its eighth figure). On a
# virtual machine, steal is time the hypervisor gave the CPUs to others.
host_ticks() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# with_peak JSON HOST_TICKS [PID CPU_TICKS]: JSON with the share of the
# machine's CPU time stolen since HOST_TICKS, the peak RSS of PID since its
# clear_refs, and its CPU time per request since it had used CPU_TICKS.
with_peak() {
  local peak=0 cpu=0
  if [ -n "${3:-}" ]; then
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$3/status")
    cpu=$(( $(cpu_ticks "$3") - $4 ))
  fi
  echo "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
d["peak_rss_mb"] = round(int(sys.argv[1]) / 1024, 1)
if int(sys.argv[2]) > 0 and d["requests"] > 0:
    d["cpu_us_per_request"] = round(int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / d["requests"], 1)
steal0, total0 = map(int, sys.argv[4].split())
steal1, total1 = map(int, sys.argv[5].split())
if total1 > total0:
    d["steal_pct"] = round(100 * (steal1 - steal0) / (total1 - total0), 1)
print(json.dumps(d))' "$peak" "$cpu" "$(getconf CLK_TCK)" "$2" "$(host_ticks)"
}

results=$work/results.jsonl
# record SCENARIO SERVER FIGURES. A run that failed gives no figures; the
# status of $(...) in an argument escapes set -e, so it is checked here.
record() {
  if [ -z "$3" ]; then echo "run $1 of $2 gave no figures" >&2; exit 1; fi
  echo "{\"scenario\":\"$1\",\"server\":\"$2\",\"figures\":$3}" >> "$results"
}

# The references for scenario 1.
limit_port=$(free_port)
"${pin_server[@]}" "$bin/bench-limit" "127.0.0.1:$limit_port" bench-client bench-secret &
limit=$!
pids+=("$limit")
peer=""
if [ -x "$PEER_DIR/start.sh" ]; then
  peer_port=$(free_port)
  PEER_PORT=$peer_port "${pin_server[@]}" "$PEER_DIR/start.sh" >"$work/peer.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 600); do
    if curl -sf -o /dev/null -u bench-client:bench-secret -d grant_type=client_credentials \
      -d scope=read "http://127.0.0.1:$peer_port/token"; then peer=yes; break; fi
    sleep 0.5
  done
  if [ -z "$peer" ]; then echo "the peer did not start; see $work/peer.log" >&2; cat "$work/peer.log" >&2; fi
fi
until (exec 3<>"/dev/tcp/127.0.0.1/$limit_port") 2>/dev/null; do sleep 0.05; done
peer_pid() { pgrep -f "node .*server.mjs" | head -1; }

echo "scenario 1, interleaved with the references: $ROUNDS rounds of ${DURATION}s each" >&2
cc_body="grant_type=client_credentials&scope=read"
for round in $(seq 1 "$ROUNDS"); do
  record 1 tessera "$(run "$base" /t/bench/token "$cc_auth" "$cc_body" "" "$server")"
  record 1 limit "$(run "http://127.0.0.1:$limit_port" /t/bench/token "$(basic bench-client bench-secret)" "$cc_body" "" "$limit")"
  if [ -n "$peer" ]; then
    record 1 peer "$(run "http://127.0.0.1:$peer_port" /token "$(basic bench-client bench-secret)" "$cc_body" "" "$(peer_pid)")"
  fi
  echo "  round $round done" >&2
done

if paced_run_wanted; then
  rate=$(python3 -c '
import json, statistics, sys
rps = [json.loads(l)["figures"]["rps"] for l in open(sys.argv[1])
       if json.loads(l)["scenario"] == "1" and json.loads(l)["server"] == "limit"]
print(int(statistics.median(rps) * float(sys.argv[2])))' "$results" "$PACED_SHARE")
  echo "scenario 1 at a fixed $rate requests/s, interleaved with the limit: $ROUNDS rounds" >&2
  sleep 2 # the peer's last run may still be closing connections
  for round in $(seq 1 "$ROUNDS"); do
    record 1p tessera "$(paced "$base" /t/bench/token "$cc_auth" "$cc_body" "$rate" "$server")"
    record 1p limit "$(paced "http://127.0.0.1:$limit_port" /t/bench/token "$(basic bench-client bench-secret)" "$cc_body" "$rate" "$limit")"
  done
fi

echo "scenario 2: client_credentials, opaque token" >&2
record 2 tessera "$(run "$base" /t/bench/token "$opaque_auth" "$cc_body" "" "$server")"

echo "scenario 3: introspection" >&2
opaque_token=$(curl -sf -H "Authorization: $opaque_auth" -d "$cc_body" "$base/t/bench/token" | field access_token)
jwt_token=$(curl -sf -H "Authorization: $cc_auth" -d "$cc_body" "$base/t/bench/token" | field access_token)
record 3a tessera "$(run "$base" /t/bench/introspect "$resource_auth" "token=$opaque_token" "" "$server")"
record 3b tessera "$(run "$base" /t/bench/introspect "$resource_auth" "token=$jwt_token" "" "$server")"

single_use=$((DURATION * SINGLE_USE_PER_SECOND))
echo "scenario 4: refresh token rotation (minting $single_use refresh tokens)" >&2
"$fixtures" refresh-tokens --tenant bench --client="$web_id" --username bench \
  --scope read --count "$single_use" > "$work/refresh.txt"
record 4 tessera "$(run "$base" /t/bench/token "$web_auth" "" "$work/refresh.txt" "$server")"

echo "scenario 5: authorization code with PKCE (minting $single_use codes)" >&2
"$fixtures" codes --tenant bench --client="$web_id" --username bench --scope read \
  --redirect-uri http://127.0.0.1:9999/cb --count "$single_use" > "$work/codes.txt"
record 5 tessera "$(run "$base" /t/bench/token "$web_auth" "" "$work/codes.txt" "$server")"

if [ "$EXTRA_TENANTS" -gt 0 ]; then
  # Scenarios 2 to 5 leave a WAL the checkpointer is still copying back; a
  # stopped server (or bench-fixtures) leaves none. 1c and 1t each run on a
  # freshly started server, so that their ratio measures the tenants and
  # nothing else. On SQLite the control runs on a copy of the database made
  # before the tenants were added, and the two alternate for $ROUNDS rounds
  # so that the machine's drift cancels out, as in scenario 1.
  stop_server
  if [ "$BACKEND" = sqlite ]; then
    python3 -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' \
      "$work/bench.db" "$work/control.db"
    "$fixtures" tenants --prefix filler --count "$EXTRA_TENANTS" >/dev/null
    echo "scenario 1 again on restarted servers, without and with $EXTRA_TENANTS more tenants: $ROUNDS rounds" >&2
    for round in $(seq 1 "$ROUNDS"); do
      TESSERA_DATABASE_URL="sqlite://$work/control.db" start_server
      record 1c tessera "$(run "$base" /t/bench/token "$cc_auth" "$cc_body" "" "$server")"
      stop_server
      start_server
      record 1t tessera "$(run "$base" /t/bench/token "$cc_auth" "$cc_body" "" "$server")"
      stop_server
    done
  else
    echo "scenario 1 again on a restarted server, then with $EXTRA_TENANTS more tenants" >&2
    start_server
    record 1c tessera "$(run "$base" /t/bench/token "$cc_auth" "$cc_body" "" "$server")"
    stop_server
    "$fixtures" tenants --prefix filler --count "$EXTRA_TENANTS" >/dev/null
    start_server
    record 1t tessera "$(run "$base" /t/bench/token "$cc_auth" "$cc_body" "" "$server")"
  fi
fi

python3 "$root/bench/report.py" "$results" "$BACKEND" "$first_startup_ms" "$idle_kb" "$DURATION" "$CONNECTIONS" "$ROUNDS" "${BENCH_PIN:-0}" "$EXTRA_TENANTS" "$build"

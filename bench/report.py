"""Prints bench/run.sh's results as a Markdown table, with the ratios."""

import json
import statistics
import sys

path, backend, startup_ms, idle_kb, duration, connections, rounds, pinned, tenants, build = sys.argv[1:11]
runs = [json.loads(line) for line in open(path)]

NAMES = {
    "1": "1. client_credentials, JWT",
    "2": "2. client_credentials, opaque",
    "3a": "3a. introspection, opaque token",
    "3b": "3b. introspection, JWT",
    "4": "4. refresh_token rotation",
    "5": "5. authorization_code + PKCE",
    "1c": "1. client_credentials, JWT, restarted server",
    "1t": f"1. client_credentials, JWT, {int(tenants):,} more tenants",
    "1p": "1p. client_credentials, JWT, at a fixed rate (oha)",
}


def figures_of(scenario, server):
    """The figures of the server's runs of the scenario, in the order run."""
    return [r["figures"] for r in runs if r["scenario"] == scenario and r["server"] == server]


def middle(found, scenario):
    """The run with the median requests/s of these (scenario 1 has rounds);
    at a fixed rate (1p), the run with the median p99. None if there are none."""
    if not found:
        return None
    found = sorted(found, key=lambda f: f["p99_ms"] if scenario == "1p" else f["rps"])
    return found[len(found) // 2]


def median(scenario, server):
    """The server's median run of the scenario (see middle)."""
    return middle(figures_of(scenario, server), scenario)


print(f"backend: {backend}; {duration} s per run, {connections} connections, wrk -t2 "
      f"(oha at a fixed rate for 1p); "
      f"scenario 1 is the median of {rounds} interleaved rounds; "
      f"{'server on CPU 0, wrk on CPU 1' if pinned == '1' else 'server and wrk share both cores'}")
print(f"build: {build}")
print()
print("| scenario | server | requests/s | p50 ms | p99 ms | errors | peak RSS MB "
      "| CPU µs/request | CPU time stolen |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for scenario in ["1", "1p", "2", "3a", "3b", "4", "5", "1c", "1t"]:
    for server in ["tessera", "limit", "peer"]:
        f = median(scenario, server)
        if f:
            cpu = f.get("cpu_us_per_request")
            steal = f.get("steal_pct")
            print(f"| {NAMES[scenario]} | {server} | {f['rps']:,.0f} | {f['p50_ms']:.2f} | "
                  f"{f['p99_ms']:.2f} | {f['errors']} | {f['peak_rss_mb']} | "
                  f"{'' if cpu is None else f'{cpu:.1f}'} | "
                  f"{'' if steal is None else f'{steal:.0f} %'} |")
print()
# Every round of scenario 1, of run 1p (where requests/s is the fixed rate
# and the p99 is what tells) and of runs 1c and 1t, in the order run: the median hides how
# far the machine moved during the run. On a virtual machine, the share of
# CPU time the hypervisor gave to others (steal) tells a slow round of the
# host from one of the server.
def round_figures(f):
    steal = f.get("steal_pct")
    errors = f", {f['errors']} errors" if f["errors"] else ""
    return (f"{f['rps']:,.0f} ({f['p99_ms']:.2f}" + ("" if steal is None else f", {steal:.0f} %")
            + errors + ")")


for scenario in ["1", "1p", "1c", "1t"]:
    by_server = {server: figures_of(scenario, server) for server in ["tessera", "limit", "peer"]}
    if by_server["tessera"]:
        print(f"scenario {scenario} by round, requests/s (p99 ms, CPU time stolen):")
        for server, figures in by_server.items():
            if figures:
                cells = ", ".join(round_figures(f) for f in figures)
                print(f"  {server}: {cells}")
print()
headline = median("1", "tessera")
print(f"idle RSS: {int(idle_kb) / 1024:.1f} MB; start to port accepting: {startup_ms} ms")
for server in ["limit", "peer"]:
    f = median("1", server)
    if f and headline:
        print(f"scenario 1, Tessera / {server}: {headline['rps'] / f['rps']:.2f}")

# The same over the rounds in which the host took next to nothing: a round
# of Tessera and the limit's round beside it, both with under 2 % stolen.
CALM_STEAL_PCT = 2
calm = [(t, lim) for t, lim in zip(figures_of("1", "tessera"), figures_of("1", "limit"))
        if t.get("steal_pct", 100) < CALM_STEAL_PCT and lim.get("steal_pct", 100) < CALM_STEAL_PCT]
if calm:
    # Each server's median round among them, as for the table.
    t, lim = middle([t for t, _ in calm], "1"), middle([lim for _, lim in calm], "1")
    print(f"scenario 1 in the {len(calm)} of {rounds} rounds with under {CALM_STEAL_PCT} % stolen "
          f"(median rounds): Tessera / limit {t['rps'] / lim['rps']:.2f}, "
          f"p99 Tessera {t['p99_ms']:.2f} ms, limit {lim['p99_ms']:.2f} ms")


def cpu_per_request(server):
    """The median CPU time per request of the server's rounds of scenario 1."""
    found = [f.get("cpu_us_per_request") for f in figures_of("1", server)]
    found = [cpu for cpu in found if cpu]
    return statistics.median(found) if found else None


# Throughput on two shared cores also depends on how the scheduler splits
# them between the server and wrk; CPU time per request does not.
tessera_cpu = cpu_per_request("tessera")
for server in ["limit", "peer"]:
    cpu = cpu_per_request(server)
    if cpu and tessera_cpu:
        print(f"scenario 1, CPU per request, {server} / Tessera: {cpu / tessera_cpu:.2f} "
              f"({cpu:.1f} µs / {tessera_cpu:.1f} µs, medians of the rounds)")
for scenario, against in [("2", "1"), ("4", "1"), ("3a", None), ("3b", None), ("1t", "1c")]:
    f = median(scenario, "tessera")
    limit = median("1", "limit")
    if not f:
        continue
    if against:
        base = median(against, "tessera")
        print(f"scenario {scenario} / scenario {against} (Tessera): {f['rps'] / base['rps']:.2f}")
    elif limit:
        print(f"scenario {scenario} (Tessera) / limit: {f['rps'] / limit['rps']:.2f}")
paced, paced_limit = median("1p", "tessera"), median("1p", "limit")
if paced and paced_limit:
    print(f"scenario 1 at a fixed {paced['rate']:,} requests/s, p99 Tessera / limit: "
          f"{paced['p99_ms'] / paced_limit['p99_ms']:.2f} "
          f"({paced['p99_ms']:.2f} ms / {paced_limit['p99_ms']:.2f} ms)")
stolen = [(r["figures"]["steal_pct"], r["scenario"], r["server"]) for r in runs
          if "steal_pct" in r["figures"]]
if stolen:
    most = max(stolen)
    typical = statistics.median(share for share, _, _ in stolen)
    print(f"CPU time stolen from this machine during the runs: median {typical:.1f} %, "
          f"at most {most[0]:.1f} % (scenario {most[1]}, {most[2]})")
    if typical > 5:
        print("the hypervisor took much of this machine's CPU time: these figures say as much "
              "about the host as about the servers")


def error_kinds(figures):
    """wrk's kinds of error (a timeout is a response slower than 2 s)."""
    kinds = figures.get("error_kinds", {})
    named = ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n)
    return f": {named}" if named else ""


errors = sum(r["figures"]["errors"] for r in runs)
failing = "; ".join(f"{r['figures']['errors']} in scenario {r['scenario']} of {r['server']}"
                    + error_kinds(r["figures"])
                    for r in runs if r["figures"]["errors"])
print(f"errors in all runs: {errors}" + (f" ({failing})" if failing else ""))

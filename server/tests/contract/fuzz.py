#!/usr/bin/env python3
"""Schemathesis against a real holdfast, from the server's own /openapi.json.

Starts a real `holdfast serve` with a small seeded campaign (holdfast_server.py) and runs
Schemathesis (pinned in requirements.txt) once per caller: an authority, an operator, staff of
the seeded clinic `clinic-1`, the citizen `citizen-1`, and no token at all. Each run tests
every operation the document lists (nothing here names a route), with the checks

    not_a_server_error, status_code_conformance, content_type_conformance,
    response_schema_conformance

in the phases examples, coverage, fuzzing and stateful (positive and negative data). Path,
query and body fields named like the seeded ids (clinic_id, slot_id, vaccine, citizen_id,
batch, and appointment ids) take a seeded value most of the time, so requests reach the
shards instead of stopping at 404.

Left out: operations whose 200 answer is `text/event-stream` (GET /v1/events and a clinic's
availability stream). They stream until the client leaves, so a generated request would
only end at its timeout; their refusals (400, 401, 403, 404, 410) are HTTP tests of
server/tests/it/ (sse.rs, events.rs). The console page (text/html) and `/` (a redirect,
not followed) are in.

The budget is `--examples` (Schemathesis's --max-examples, per operation and phase) and
`--max-time` per caller; the figures printed at the end are the requests sent, the operations
covered and the failures. Exit 0 without failures, 1 with them (Schemathesis's report of each
is printed), 2 on a usage error. Run bounded by server/tests/it/contract.rs; the long pass
(docs/API.md, "Contract checks"):

    python3 server/tests/contract/fuzz.py --holdfast target/release/holdfast --examples 60
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
import holdfast_server as seed
from holdfast_server import Failed, Server, document, log, operations

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")
PHASES = "examples,coverage,fuzzing,stateful"
# The callers, each a run of its own: (name, role of its token or None for no token).
CALLERS = [("authority", "authority"), ("operator", "operator"), ("staff", "staff"),
           ("citizen", "citizen"), ("anonymous", None)]
# How often a field named like a seeded id takes a seeded value instead of a generated one.
SEEDED_ID_PROBABILITY = 0.8
# Backstop of one Schemathesis run beyond its own --max-time (seconds).
RUN_GRACE_S = 120
# Bound of one generated request (seconds): every answer of this server is immediate.
REQUEST_TIMEOUT_S = 10


def streaming(op):
    """Whether an operation's success is an event stream (it never ends by itself)."""
    ok = op.get("responses", {}).get("200", {})
    return "text/event-stream" in ok.get("content", {})


def config_toml(appointments):
    """A schemathesis.toml binding the seeded ids to the fields that carry them."""
    dictionaries = {
        "clinic": seed.CLINICS, "slot": seed.SLOTS, "vaccine": seed.VACCINES,
        "citizen": seed.CITIZENS, "batch": seed.BATCHES, "appointment": appointments,
        "region": [seed.REGION],
    }
    bindings = {
        "clinic_id": "clinic", "slot_id": "slot", "vaccine": "vaccine",
        "citizen_id": "citizen", "batch": "batch", "id": "appointment",
        "appointment_id": "appointment", "region": "region",
    }
    lines = []
    for name, values in dictionaries.items():
        lines.append(f"[dictionaries.{name}]")
        lines.append(f"values = {json.dumps(values)}")
    lines.append("[parameters]")
    for field, dictionary in bindings.items():
        for location in ("path", "query", "body"):
            if location != "body" or field != "id":
                lines.append(f'"{location}.{field}" = {{ dictionary = "{dictionary}", '
                             f"probability = {SEEDED_ID_PROBABILITY} }}")
    return "\n".join(lines) + "\n"


def run_caller(server, name, role, excluded, args, work):
    """One Schemathesis run as `name`; returns (its interactions(), failures, its output)."""
    config = os.path.join(work, "schemathesis.toml")
    with open(config, "w") as f:
        f.write(config_toml(server.appointments))
    ndjson = os.path.join(work, f"{name}.ndjson")
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", config, "run",
               server.base + "/openapi.json", "--checks", CHECKS, "--phases", PHASES,
               "--max-examples", str(args.examples), "--max-time", str(args.max_time),
               "--seed", str(args.seed), "--workers", str(args.workers),
               "--request-timeout", str(REQUEST_TIMEOUT_S), "--max-redirects", "0",
               "--continue-on-failure", "--report", "ndjson", "--report-ndjson-path", ndjson,
               "--suppress-health-check", "all", "--warnings", "off", "--no-color"]
    if role:
        command += ["--header", f"Authorization: Bearer {server.tokens[role]}"]
    for path in excluded:
        command += ["--exclude-path", path]
    run = subprocess.run(command, capture_output=True, text=True,
                         timeout=args.max_time + RUN_GRACE_S, cwd=work)
    output = run.stdout + run.stderr
    failures = failure_count(output)
    if run.returncode not in (0, 1) or (run.returncode == 1 and failures == 0):
        raise Failed(f"schemathesis as {name} exited with {run.returncode}:\n{output}")
    return interactions(ndjson), failures, output


def interactions(ndjson):
    """From Schemathesis's NDJSON report: the requests it sent, the operations they were
    generated for, and how many answers had each status."""
    sent, operations_seen, statuses = 0, set(), collections.Counter()
    try:
        with open(ndjson) as f:
            for line in f:
                finished = json.loads(line).get("ScenarioFinished")
                if not finished:
                    continue
                recorder = finished["recorder"]
                if recorder.get("label") not in (None, "Stateful tests"):
                    operations_seen.add(recorder["label"])
                for interaction in recorder.get("interactions", {}).values():
                    sent += 1
                    response = interaction.get("response") or {}
                    statuses[response.get("status_code", "none")] += 1
    except OSError:
        pass
    return sent, operations_seen, statuses


def failure_count(output):
    """Failures and errors in a Schemathesis summary ("M found K unique failures", and the
    "N errors" of its last line): a generator's own crash is not a pass either."""
    found = re.search(r"found (\d+) unique failures", output)
    errors = re.search(r"(\d+) errors?\b[^\n]*=+\s*$", output.strip())
    return (int(found.group(1)) if found else 0) + (int(errors.group(1)) if errors else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--holdfast", required=True, help="the holdfast binary")
    parser.add_argument("--examples", type=int, default=10,
                        help="Schemathesis --max-examples (per operation and phase)")
    parser.add_argument("--max-time", type=int, default=120,
                        help="seconds one caller's run may take at most")
    parser.add_argument("--seed", type=int, default=20261207, help="Schemathesis --seed")
    # One worker: with two, Hypothesis describes filters (ast.parse) from two threads at once,
    # which CPython 3.11 does not survive ("AST constructor recursion depth mismatch").
    parser.add_argument("--workers", type=int, default=1, help="Schemathesis --workers")
    args = parser.parse_args()
    with Server(args.holdfast) as server, \
            tempfile.TemporaryDirectory(prefix="holdfast-fuzz-") as work:
        doc = document(server.base)
        excluded = sorted({path for _, path, op in operations(doc) if streaming(op)})
        covered = [f"{m} {p}" for m, p, _ in operations(doc) if p not in excluded]
        log(f"{len(covered)} operations under test; left out (event streams): {excluded}")
        sent, failures, tested = 0, 0, set()
        statuses = collections.Counter()
        failed_outputs = []
        for name, role in CALLERS:
            (requests, seen, answers), found, output = run_caller(
                server, name, role, excluded, args, work)
            phases = re.findall(r"^\s*(\S+)\s+(Examples|Coverage|Fuzzing|Stateful)\s*$",
                                output, re.MULTILINE)
            log(f"as {name}: {requests} requests, {len(seen)} operations, {found} failures; "
                f"statuses {dict(sorted(answers.items()))}; phases "
                + " ".join(f"{phase} {mark}" for mark, phase in phases))
            sent, failures = sent + requests, failures + found
            tested |= seen
            statuses += answers
            if found:
                failed_outputs.append(f"===== as {name} =====\n{output}")
        status, _ = seed.http("GET", server.base + "/healthz", expect=None)
        if status != 200:
            failed_outputs.append(f"/healthz answered {status} after the run")
            failures += 1
        if failed_outputs:
            failed_outputs.append("---- the server's last lines ----\n" + server.log_tail())
        untested = sorted(set(covered) - tested - {"GET /openapi.json"})
    print(f"fuzz: {sent} requests, {len(tested)} operations covered, {failures} failures; "
          f"statuses {dict(sorted(statuses.items()))}", flush=True)
    if untested:
        # Schemathesis skips its own schema's URL (GET /openapi.json), nothing else.
        failed_outputs.append(f"operations no request was generated for: {untested}")
    if failed_outputs:
        print("\n".join(failed_outputs), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)

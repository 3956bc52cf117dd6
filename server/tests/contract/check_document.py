#!/usr/bin/env python3
"""The server's /openapi.json as the tools of a client team see it.

Starts a real `holdfast serve` (holdfast_server.py), fetches its /openapi.json, and checks:

  1. openapi-spec-validator accepts it as OpenAPI 3.1 (a query parameter declared `in: path`,
     a path parameter missing from its template, a broken $ref: each fails here);
  2. every operation has an operationId, and a request body, a bearer token or an
     Idempotency-Key comes with the statuses those always bring (400/413/415, 401,
     400/422/503);
  3. openapi-python-client generates a client from it without a single warning
     (`--fail-on-warning`: a skipped endpoint is a warning), with a function module for every
     operation, and the generated package compiles.

Exit 0 when all hold, 1 with the reasons otherwise, 2 on a usage error. Run by
server/tests/it/contract.rs (so by `cargo test --workspace`); by hand:

    python3 server/tests/contract/check_document.py --holdfast target/debug/holdfast

Needs the pinned tools of requirements.txt beside this file.
"""

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile

from openapi_python_client.strings import snake_case
from openapi_spec_validator import OpenAPIV31SpecValidator

sys.dont_write_bytecode = True  # no __pycache__ left in the source tree
from holdfast_server import Failed, Server, document, log, operations

HERE = os.path.dirname(os.path.abspath(__file__))
# Bound of the generator's run (seconds); it takes a few on this document.
GENERATOR_TIMEOUT_S = 180


def validate(doc):
    """openapi-spec-validator's findings, as text (empty when valid)."""
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    return errors


def shared_statuses(doc):
    """Operations missing a status their request body or their token always brings."""
    missing = []
    for method, path, op in operations(doc):
        if not op.get("operationId"):
            missing.append(f"{method} {path}: no operationId")
        wanted = []
        if "requestBody" in op:
            wanted += ["400", "413", "415"]
        if op.get("security"):
            wanted.append("401")
        if any(p["in"] == "header" and p["name"] == "Idempotency-Key"
               for p in op.get("parameters", [])):
            wanted += ["400", "422", "503"]
        missing += [f"{method} {path}: no {status}" for status in wanted
                    if status not in op["responses"]]
    return missing


def generate(doc, work):
    """Runs openapi-python-client; returns the problems found (empty when none)."""
    path = os.path.join(work, "openapi.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    out = os.path.join(work, "client")
    run = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", path,
         "--meta", "none", "--output-path", out, "--fail-on-warning",
         "--config", os.path.join(HERE, "client-config.json")],
        capture_output=True, text=True, timeout=GENERATOR_TIMEOUT_S,
    )
    if run.returncode != 0:
        return [f"openapi-python-client exited with {run.returncode}:\n{run.stdout}{run.stderr}"]
    generated = {name[:-3] for _, _, files in os.walk(os.path.join(out, "api"))
                 for name in files if name.endswith(".py") and name != "__init__.py"}
    problems = [f"{method} {path}: no generated module {snake_case(op['operationId'])}.py"
                for method, path, op in operations(doc)
                if snake_case(op.get("operationId", "")) not in generated]
    if not compileall.compile_dir(out, quiet=1):
        problems.append("the generated client does not compile")
    log(f"openapi-python-client generated {len(generated)} endpoint modules")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--holdfast", required=True, help="the holdfast binary")
    args = parser.parse_args()
    with Server(args.holdfast, seed=False) as server, \
            tempfile.TemporaryDirectory(prefix="holdfast-client-") as work:
        doc = document(server.base)
        log(f"/openapi.json: OpenAPI {doc.get('openapi')}, {len(operations(doc))} operations")
        problems = validate(doc)
        log(f"openapi-spec-validator: {len(problems)} errors")
        problems += shared_statuses(doc)
        problems += generate(doc, work)
    if problems:
        print("FAILED: the document is not one clients can trust:", file=sys.stderr)
        for problem in problems:
            print("  - " + problem, file=sys.stderr)
        return 1
    log("the document validates and generates a complete client")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)

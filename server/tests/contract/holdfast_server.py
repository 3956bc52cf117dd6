"""A real `holdfast serve` for the contract checks: started on a temporary data directory at
127.0.0.1 port 0 (`--addr-file` tells the port), with a fresh JWT secret, a token for each
role, and a small campaign seeded over HTTP (SEED below), so that generated requests find
real clinics, slots, citizens and appointments instead of only 404s.

Used by check_document.py and fuzz.py beside this file; not a script of its own. Every wait
is bounded; `Server` is a context manager that kills the server (SIGKILL) and removes the
directory whatever happens.
"""

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from holdfast_proc import Failed, http, log_tail, start_serve, token  # noqa: E402,F401

# Bounds of every wait (seconds).
SERVER_READY_TIMEOUT_S = 60
# Shards of the data directory: few, so a debug build starts at once.
SHARDS = 4
# Lifetime of the tokens: longer than any bounded run.
TOKEN_TTL = "12h"

# The seeded campaign: the ids generated requests are steered to (fuzz.py's dictionaries).
VACCINES = ["pfz", "mdn"]
CLINICS = ["clinic-1", "clinic-2"]
REGION = "north"
SLOTS = ["s-1", "s-2", "s-3"]
BATCHES = ["B-1", "B-2"]
CITIZENS = ["citizen-1", "citizen-2", "citizen-3"]
# The staff token is of CLINICS[0], the citizen token of CITIZENS[0].
STAFF_CLINIC = CLINICS[0]
CITIZEN = CITIZENS[0]
DOSES = 1000
SLOT_CAPACITY = 500


def log(message):
    print(f"[contract {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Server:
    """`with Server(holdfast) as s:` gives `s.base` (http://127.0.0.1:PORT), `s.tokens`
    (role -> bearer token: authority, operator, staff, citizen) and `s.appointments` (ids of
    the seeded appointments)."""

    def __init__(self, holdfast, seed=True):
        self.holdfast = holdfast
        self.seed_campaign = seed
        self.work = None
        self.process = None
        self.base = None
        self.tokens = {}
        self.appointments = []

    def __enter__(self):
        self.work = tempfile.mkdtemp(prefix="holdfast-contract-")
        try:
            self._start()
            if self.seed_campaign:
                self._seed()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=SERVER_READY_TIMEOUT_S)
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)

    def log_tail(self, lines=40):
        """The last lines the server printed (for a failure report)."""
        return log_tail(self.work, lines)

    def _token(self, role, *extra):
        return token(self.holdfast, self.secret, role, TOKEN_TTL, *extra)

    def _start(self):
        self.secret = os.path.join(self.work, "secret")
        with open(self.secret, "w") as f:
            f.write(secrets.token_hex(32))
        self.process, self.base = start_serve(
            self.holdfast, self.work, SERVER_READY_TIMEOUT_S,
            "--shards", str(SHARDS), "--durability", "async")
        self.tokens = {
            "authority": self._token("authority"),
            "operator": self._token("operator"),
            "staff": self._token("staff", "--clinic-id", STAFF_CLINIC),
            "citizen": self._token("citizen", "--citizen-id", CITIZEN),
        }
        log(f"server at {self.base}")

    def _seed(self):
        """SEED: two vaccines, two clinics with three slots each (from tomorrow) and stock in
        two batches, three adult citizens, and a PENDING and a CONFIRMED appointment."""
        base, authority = self.base, self.tokens["authority"]
        for vaccine in VACCINES:
            http("PUT", f"{base}/v1/vaccines/{vaccine}", authority, {
                "min_age": 12, "max_age": None, "regions": [], "series_doses": 2,
                "min_interval_days": 21, "contraindications": []})
        start = datetime.now(timezone.utc).replace(microsecond=0, second=0, minute=0)
        rfc3339 = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
        for clinic in CLINICS:
            http("PUT", f"{base}/v1/clinics/{clinic}", authority,
                 {"name": f"Clinic {clinic}", "region": REGION, "timezone": "Europe/Berlin"})
            for day, slot in enumerate(SLOTS, start=1):
                begins = start + timedelta(days=day)
                http("PUT", f"{base}/v1/clinics/{clinic}/slots/{slot}", authority, {
                    "start": rfc3339(begins), "end": rfc3339(begins + timedelta(hours=1)),
                    "capacity": SLOT_CAPACITY, "vaccines": VACCINES, "priority_reserve": 0})
            for vaccine in VACCINES:
                for batch in BATCHES:
                    http("POST", f"{base}/v1/clinics/{clinic}/stock", authority, {
                        "vaccine": vaccine, "batch": batch, "quantity": DOSES,
                        "expires_on": "2099-12-31"})
        for citizen in CITIZENS:
            http("PUT", f"{base}/v1/citizens/{citizen}", authority, {
                "birth_date": "1980-05-05", "region": REGION, "allergies": [],
                "insurance_id": "I-9", "doses": []})
        for n, (citizen, slot) in enumerate([(CITIZEN, SLOTS[0]), (CITIZENS[1], SLOTS[1])]):
            _, text = http("POST", f"{base}/v1/appointments", authority, {
                "clinic_id": STAFF_CLINIC, "slot_id": slot, "vaccine": VACCINES[0],
                "citizen_id": citizen, "hold_seconds": 900},
                headers={"Idempotency-Key": f"contract-seed-{n}"}, expect=201)
            self.appointments.append(json.loads(text)["appointment_id"])
        http("POST", f"{base}/v1/appointments/{self.appointments[1]}/confirm", authority)
        log(f"seeded {len(CLINICS)} clinics, {len(CITIZENS)} citizens, "
            f"appointments {self.appointments}")


def document(base):
    """The server's /openapi.json, parsed."""
    _, text = http("GET", base + "/openapi.json")
    return json.loads(text)


def operations(doc):
    """Every (METHOD, path, operation) of an OpenAPI document."""
    methods = ("get", "put", "post", "delete", "patch")
    return [(method.upper(), path, op)
            for path, item in sorted(doc["paths"].items())
            for method, op in item.items() if method in methods]

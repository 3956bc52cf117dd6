#!/usr/bin/env python3
"""The operator console (GET /console) in a real headless Chromium, end to end.

Starts a real `holdfast serve` (temporary data directory, port 0, --addr-file), makes a secret
and tokens with `holdfast token`, opens the page in headless Chromium driven over the Chrome
DevTools Protocol (--remote-debugging-port, one websocket to the page), and checks what an
operator sees:

  1. failure cases first: a token that is not a token shows `error` with HTTP 401; a
     citizen's token shows `error` with HTTP 403;
  2. the operator token pasted into the page (typed into the field as a paste would) reaches
     `live`, with one row per shard;
  3. a booking made over HTTP during the test shows up: its appointment id in the latest
     events, the clinic's available doses one lower, the shards' pending total one higher;
  4. the server is killed (SIGKILL) and restarted on the same address, and a booking is made
     before the page reconnects (its reconnection is held through the CDP Fetch domain until
     then): the page resumes with `Last-Event-ID` set to the last id it showed, goes live
     again, shows that booking, and shows no event twice;
  5. no Content-Security-Policy violation and no uncaught exception on the page.

Every wait is bounded (the constants below); every process it starts is killed and the
temporary directory removed, whatever happens. Exit 0 on success, 1 on a failed check (with
the reason), 2 on a usage error. Run by server/tests/it/console_browser.rs (so by `cargo test
--workspace`); by hand:

    python3 server/tests/browser/console_page.py --holdfast target/debug/holdfast \
        [--chromium chromium] [--screenshot /tmp/console.png]

Needs `websocket-client` (pinned in requirements.txt beside this file).
"""

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

import websocket  # websocket-client

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from holdfast_proc import Failed, http, start_serve, token, wait_until  # noqa: E402

# Bounds of every wait (seconds); TOTAL_TIMEOUT_S bounds the whole run.
TOTAL_TIMEOUT_S = 240
SERVER_READY_TIMEOUT_S = 30
BROWSER_START_TIMEOUT_S = 30
CDP_CALL_TIMEOUT_S = 15
PAGE_STATE_TIMEOUT_S = 30
BOOKING_SHOWN_TIMEOUT_S = 30
PROCESS_STOP_TIMEOUT_S = 5

SHARDS = 4
CLINIC = "console-clinic"
SLOT = "s-1"
VACCINE = "pfz"
CITIZEN = "console-citizen"
CITIZEN_AFTER_RESTART = "console-citizen-2"
DOSES = 5

STARTED = time.monotonic()


def log(message):
    print(f"[console_page {time.monotonic() - STARTED:6.2f}s] {message}", flush=True)


# ---- the server ------------------------------------------------------------------------


def holdfast_token(holdfast, secret, role, *extra):
    return token(holdfast, secret, role, "1h", *extra)


def start_server(holdfast, work, listen="127.0.0.1:0"):
    """`holdfast serve` on `work`'s data directory; `listen` is port 0 but for a restart."""
    return start_serve(holdfast, work, SERVER_READY_TIMEOUT_S, "--shards", str(SHARDS),
                       "--durability", "sync", listen=listen)


def set_up_campaign(base, authority):
    """A vaccine, a clinic with one slot tomorrow and DOSES doses, and an adult citizen."""
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    rfc3339 = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
    http("PUT", f"{base}/v1/vaccines/{VACCINE}", authority, {
        "min_age": 12, "max_age": None, "regions": [], "series_doses": 2,
        "min_interval_days": 21, "contraindications": []})
    http("PUT", f"{base}/v1/clinics/{CLINIC}", authority,
         {"name": "Console clinic", "region": "north", "timezone": "Europe/Berlin"})
    http("PUT", f"{base}/v1/clinics/{CLINIC}/slots/{SLOT}", authority, {
        "start": rfc3339(start), "end": rfc3339(start + timedelta(hours=1)), "capacity": 10,
        "vaccines": [VACCINE], "priority_reserve": 0})
    http("POST", f"{base}/v1/clinics/{CLINIC}/stock", authority, {
        "vaccine": VACCINE, "batch": "B-1", "quantity": DOSES, "expires_on": "2099-12-31"})
    for citizen in (CITIZEN, CITIZEN_AFTER_RESTART):
        http("PUT", f"{base}/v1/citizens/{citizen}", authority, {
            "birth_date": "1980-05-05", "region": "north", "allergies": [],
            "insurance_id": "I-9", "doses": []})


def book(base, citizen_token, citizen):
    _, text = http("POST", f"{base}/v1/appointments", citizen_token, {
        "clinic_id": CLINIC, "slot_id": SLOT, "vaccine": VACCINE, "citizen_id": citizen},
        headers={"Idempotency-Key": f"console-test-{citizen}"}, expect=201)
    return json.loads(text)["appointment_id"]


# ---- the browser -----------------------------------------------------------------------


def start_browser(chromium, work):
    profile = os.path.join(work, "profile")
    browser_log = open(os.path.join(work, "chromium.log"), "wb")
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=browser_log, stderr=subprocess.STDOUT,
    )
    port_file = os.path.join(profile, "DevToolsActivePort")

    def port():
        if browser.poll() is not None:
            raise Failed(f"chromium exited with {browser.returncode} (see chromium.log)")
        if os.path.exists(port_file):
            lines = open(port_file).read().split()
            return lines[0] if lines else None
        return None

    debug = "http://127.0.0.1:" + wait_until("chromium's DevToolsActivePort",
                                             BROWSER_START_TIMEOUT_S, port)

    def page_target():
        status, text = http("GET", debug + "/json/list", expect=None)
        if status != 200:
            return None
        pages = [t for t in json.loads(text) if t.get("type") == "page"]
        return pages[0]["webSocketDebuggerUrl"] if pages else None

    return browser, wait_until("a page target", BROWSER_START_TIMEOUT_S, page_target)


class Page:
    """One CDP session with a page: calls answered by id, events collected as they come."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=CDP_CALL_TIMEOUT_S,
                                              suppress_origin=True)
        self.next_id = 0
        self.problems = []  # CSP violations and uncaught exceptions seen on the page
        self.paused = []  # requests held by Fetch.enable, oldest first

    def call(self, method, **params):
        self.next_id += 1
        call_id = self.next_id
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = time.monotonic() + CDP_CALL_TIMEOUT_S
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise Failed(f"CDP {method}: {message['error']}")
                return message.get("result", {})
            self.note(message)
        raise Failed(f"CDP {method}: no answer within {CDP_CALL_TIMEOUT_S} s")

    def note(self, message):
        method, params = message.get("method"), message.get("params", {})
        if method == "Fetch.requestPaused":
            self.paused.append(params)
        elif method == "Runtime.exceptionThrown":
            self.problems.append("uncaught: " + json.dumps(params.get("exceptionDetails"))[:500])
        elif method == "Log.entryAdded":
            text = params.get("entry", {}).get("text", "")
            if "Content Security Policy" in text or "Content-Security-Policy" in text:
                self.problems.append("CSP: " + text)

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise Failed(f"evaluating {expression!r}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def open(self, url):
        self.call("Page.navigate", url="about:blank")
        self.call("Page.navigate", url=url)
        wait_until(f"{url} loaded", PAGE_STATE_TIMEOUT_S,
                   lambda: self.eval("document.readyState === 'complete' && "
                                     "!!document.getElementById('state')"))

    def state(self):
        return self.eval("(() => { const s = document.getElementById('state'); "
                         "return s ? [s.dataset.state, s.textContent] : null; })()")

    def wait_state(self, wanted, contains=""):
        def probe():
            seen = self.state()
            return seen if seen and seen[0] == wanted and contains in seen[1] else None
        # Keep the last state in the failure message.
        try:
            return wait_until(f"the page's state {wanted!r} ({contains!r})",
                              PAGE_STATE_TIMEOUT_S, probe)
        except Failed as failure:
            raise Failed(f"{failure}; the page says {self.state()!r}") from None

    def next_paused(self):
        """The oldest request held by the Fetch domain, if one is (reads pending events)."""
        self.eval("1")
        return self.paused.pop(0) if self.paused else None

    def event_ids(self):
        """The ids of the latest-events list, newest first."""
        return self.eval("[...document.querySelectorAll('#events li .seq')]"
                         ".map((s) => s.textContent.trim())")

    def shows_appointment(self, appointment):
        return self.eval(f"!!document.querySelector("
                         f"'#events li[data-appointment-id=\"{appointment}\"]')")

    def available(self):
        return self.eval(f"(() => {{ const d = document.querySelector("
                         f"'tr[data-clinic-id=\"{CLINIC}\"] [data-vaccine=\"{VACCINE}\"]'); "
                         f"return d ? Number(d.dataset.available) : null; }})()")

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing a socket that may be gone already
            pass


# ---- the test --------------------------------------------------------------------------


def run(args, work):
    secret = os.path.join(work, "secret")
    with open(secret, "w") as f:
        f.write(secrets.token_hex(32))
    operator = holdfast_token(args.holdfast, secret, "operator")
    authority = holdfast_token(args.holdfast, secret, "authority")
    citizen = holdfast_token(args.holdfast, secret, "citizen", "--citizen-id", CITIZEN)
    second = holdfast_token(args.holdfast, secret, "citizen", "--citizen-id",
                            CITIZEN_AFTER_RESTART)
    processes = []
    try:
        server, base = start_server(args.holdfast, work)
        processes.append(server)
        log(f"server ready at {base}")
        set_up_campaign(base, authority)
        browser, ws_url = start_browser(args.chromium, work)
        processes.append(browser)
        page = Page(ws_url)
        try:
            check_page(page, base, operator, citizen)
            restart = lambda: processes.append(
                start_server(args.holdfast, work, base.removeprefix("http://"))[0])
            check_resume(page, server, restart, base, second)
            if args.screenshot:
                shot = page.call("Page.captureScreenshot", format="png")
                with open(args.screenshot, "wb") as f:
                    f.write(base64.b64decode(shot["data"]))
                log(f"screenshot: {args.screenshot}")
            page.eval("1")  # drain the events that came in meanwhile
            if page.problems:
                raise Failed("the page reported: " + "; ".join(page.problems))
        finally:
            page.close()
    finally:
        for process in reversed(processes):
            stop(process)


def check_page(page, base, operator, citizen):
    page.call("Runtime.enable")
    page.call("Log.enable")
    page.call("Page.enable")
    console = base + "/console"

    page.open(console)
    page.wait_state("idle", "not connected")
    log("without a token: not connected")
    page.open(console + "#token=not-a-token")
    page.wait_state("error", "401")
    log(f"a bad token: {page.state()[1]}")
    if "not-a-token" in page.eval("location.href"):
        raise Failed("the token stayed in the address bar")
    page.open(console + "#token=" + citizen)
    page.wait_state("error", "403")
    log(f"a citizen's token: {page.state()[1]}")

    # The operator pastes the token and connects (the bad ones were forgotten).
    page.open(console)
    page.wait_state("idle", "not connected")
    page.eval("document.getElementById('token').focus()")
    page.call("Input.insertText", text=operator)
    page.eval("document.getElementById('connect-button').click()")
    page.wait_state("live")
    log("the pasted operator token: live")

    ready_rows = "document.querySelectorAll('#shards tbody tr[data-status=\"ready\"]').length"
    rows = wait_until(f"{SHARDS} ready shard rows", PAGE_STATE_TIMEOUT_S,
                      lambda: page.eval(ready_rows) == SHARDS and SHARDS)
    before = wait_until("the clinic's availability", PAGE_STATE_TIMEOUT_S,
                        lambda: page.available() == DOSES and DOSES)
    log(f"shard rows ready: {rows}; {CLINIC} shows {before} {VACCINE} available")

    appointment = book(base, citizen, CITIZEN)
    log(f"booked {appointment} over HTTP")
    wait_until("the booking in the latest events", BOOKING_SHOWN_TIMEOUT_S,
               lambda: page.shows_appointment(appointment))
    wait_until("the clinic's availability one lower", BOOKING_SHOWN_TIMEOUT_S,
               lambda: page.available() == DOSES - 1)
    pending = ("Number(document.querySelector('#shards tfoot td:nth-child(3)')"
               "?.textContent ?? -1)")
    wait_until("one pending appointment in the shard totals", BOOKING_SHOWN_TIMEOUT_S,
               lambda: page.eval(pending) == 1)
    log("the page shows the booking: the event, the availability and the pending total")
    counted = "document.getElementById('bookings-total').textContent"
    bookings = wait_until("the bookings counter at 1", BOOKING_SHOWN_TIMEOUT_S,
                          lambda: page.eval(counted) == "1" and page.eval(counted))
    log(f"bookings counted since connected: {bookings}")



def check_resume(page, server, restart, base, citizen_token):
    """SIGKILL and restart the server; a booking made before the page reconnects shows up,
    because the page resumes with `Last-Event-ID` (without it the stream would start after
    that booking), and no event shows twice.

    The page's reconnection to /v1/events is held (CDP Fetch domain) until the server is back
    and the booking made, so the order does not depend on timing."""
    last_id = page.eval("document.getElementById('last-event-id').textContent")
    page.call("Fetch.enable", patterns=[{"urlPattern": "*/v1/events*", "requestStage": "Request"}])
    server.kill()
    server.wait(PROCESS_STOP_TIMEOUT_S)
    wait_until("the page to notice the server is gone", PAGE_STATE_TIMEOUT_S,
               lambda: page.state()[0] != "live" and page.state())
    log(f"server killed (SIGKILL); the page says {page.state()[1]!r}")
    held = wait_until("the page's reconnection to /v1/events", PAGE_STATE_TIMEOUT_S,
                      page.next_paused)
    restart()
    appointment = book(base, citizen_token, CITIZEN_AFTER_RESTART)
    log(f"server restarted on {base}; booked {appointment} before the page reconnected")
    headers = {name.lower(): value for name, value in held["request"]["headers"].items()}
    if headers.get("last-event-id") != last_id:
        raise Failed(f"the reconnection sent Last-Event-ID {headers.get('last-event-id')!r}, "
                     f"not the last id shown, {last_id!r}")
    page.call("Fetch.continueRequest", requestId=held["requestId"])
    page.call("Fetch.disable")
    page.wait_state("live")
    wait_until("the booking made while the page was away", BOOKING_SHOWN_TIMEOUT_S,
               lambda: page.shows_appointment(appointment))
    ids = page.event_ids()
    if len(ids) != len(set(ids)):
        raise Failed(f"an event shows twice after the resume: {ids}")
    log(f"resumed after id {last_id}: live again, {appointment} shown, no event twice ({ids})")


def stop(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(PROCESS_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(PROCESS_STOP_TIMEOUT_S)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdfast", required=True, help="the holdfast binary")
    parser.add_argument("--chromium", default="chromium", help="the Chromium binary")
    parser.add_argument("--screenshot", help="save a PNG of the page showing the booking")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs, data, profile)")
    args = parser.parse_args()
    if shutil.which(args.chromium) is None or not os.access(args.holdfast, os.X_OK):
        print(f"usage: {args.chromium!r} or {args.holdfast!r} is not an executable", flush=True)
        return 2
    # A deadline or a SIGTERM (the Rust test's backstop) becomes a failure, so the clean-up
    # below still stops the server and the browser.
    def interrupted(signum, _frame):
        raise Failed(f"interrupted by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGALRM, interrupted)
    signal.alarm(TOTAL_TIMEOUT_S)
    work = tempfile.mkdtemp(prefix="holdfast-console-")
    try:
        run(args, work)
    except Failed as failure:
        log(f"FAILED: {failure}")
        for name in ("server.log", "chromium.log"):
            path = os.path.join(work, name)
            if os.path.exists(path):
                tail = open(path, errors="replace").read()[-3000:]
                print(f"---- last of {name} ----\n{tail}", flush=True)
        return 1
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    log("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The browser half of scripts/ui-test.sh: drives Debian's Chromium through
ChromeDriver over the W3C WebDriver protocol (HTTP + JSON, standard library
only) against the real page, daemon and portal that ui-test.sh started.

Arguments come from ui-test.sh as environment variables (UI_*); each step
prints "ui: ok: ..." or "ui: FAILED: ...", keeps a screenshot in
$UI_SCREENSHOTS, and the last line is "ui: N passed, M failed"."""

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

E = os.environ
DRIVER = E["UI_DRIVER"]            # http://127.0.0.1:PORT of chromedriver
ADMIN = E["UI_ADMIN_URL"]          # licagent ui (root: an admin)
VIEWER = E["UI_VIEWER_URL"]        # nginx as nobody -> the daemon's /ui/
CODE_FILE = E["UI_CODE_FILE"]      # stdout of licagent ui (the login code)
SHOTS = E["UI_SCREENSHOTS"]
KEY = E["UI_KEY"]
SERIAL = E["UI_SERIAL"]
AGENT = E["UI_AGENT"].split()      # licagent --config ...
PORTAL = E["UI_PORTAL"].split()    # licportal --data ...
PORTAL_LOG = E["UI_PORTAL_LOG"]
AGENT_LOG = E["UI_AGENT_LOG"]
WAIT = 20.0

passed = 0
failed = 0
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def ok(what):
    global passed
    passed += 1
    print(f"ui: ok: {what}", flush=True)


def fail(what):
    global failed
    failed += 1
    print(f"ui: FAILED: {what}", file=sys.stderr, flush=True)


def check(cond, what):
    (ok if cond else fail)(what)
    return cond


class WebDriver:
    """The few WebDriver commands the test needs."""

    def __init__(self, base):
        self.base = base
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                # --no-sandbox: CI runs as root, where Chromium's sandbox
                # refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,2400",
                         "--no-first-run", "--disable-extensions"],
            },
        }}}
        self.sid = self.call("POST", "/session", caps)["sessionId"]

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.loads(r.read() or b"{}").get("value")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"webdriver {method} {path}: {e.code} {e.read()[:500]!r}")

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.sid}{path}", body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def find(self, css):
        return self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css, text):
        el = self.find(css)
        self.s("POST", f"/element/{el}/clear", {})
        self.s("POST", f"/element/{el}/value", {"text": text})

    def click(self, css):
        self.s("POST", f"/element/{self.find(css)}/click", {})

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script, *args):
        return self.s("POST", "/execute/async", {"script": script, "args": list(args)})

    def text(self, css):
        return self.js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", css)

    def wait(self, script, what, *args):
        """Polls a script until it returns something true; the value or None."""
        end = time.monotonic() + WAIT
        last = None
        while time.monotonic() < end:
            try:
                last = self.js(script, *args)
            except RuntimeError as e:
                last = str(e)
            else:
                if last:
                    return last
            time.sleep(0.2)
        print(f"ui: (waited for {what}; last value {last!r})", file=sys.stderr)
        return None

    def shot(self, name):
        png = base64.b64decode(self.s("GET", "/screenshot"))
        path = os.path.join(SHOTS, name + ".png")
        with open(path, "wb") as f:
            f.write(png)

    def quit(self):
        try:
            self.call("DELETE", f"/session/{self.sid}")
        except Exception:
            pass


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def login_code():
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        with open(CODE_FILE) as f:
            codes = re.findall(r"Login code \(once, in the page\): (\S+)", f.read())
        if codes:
            return codes[-1]
        time.sleep(0.1)
    raise RuntimeError("licagent ui printed no login code")


def seat_cell(code, col):
    return (f"const r = document.querySelector('#seats tr[data-code=\"{code}\"] td.{col}');"
            " return r ? r.textContent : null;")


def main():
    wd = WebDriver(DRIVER)
    try:
        steps(wd)
    except Exception as e:  # a step that cannot go on: counted, then the summary
        fail(f"the browser test stopped: {e}")
        try:
            wd.shot("99-stopped")
        except Exception:
            pass
    finally:
        wd.quit()


def steps(wd):
    # 1. The admin's page (licagent ui) asks for the login code.
    wd.go(ADMIN + "/")
    check(wd.wait("return !document.getElementById('login').hidden", "the login form"),
          "licagent ui shows the login form before anything else")
    wd.type("#login-code", "00000-00000")
    wd.click("#login-form button")
    msg = wd.wait("return document.getElementById('login-msg').textContent", "the login refusal")
    check(msg and "not the login code" in msg, f"a wrong login code is refused ({msg!r})")
    check(wd.js("return getComputedStyle(document.getElementById('page')).display") == "none",
          "nothing but the login is shown before the login")
    wd.shot("01-login")
    wd.type("#login-code", login_code())
    wd.click("#login-form button")
    state = wd.wait("const t = document.getElementById('state').textContent; return !document.getElementById('page').hidden && t !== '…' && t",
                    "the page after login")
    check(state == "Unlicensed", f"after the login the page shows the state ({state!r})")
    cookie = wd.js("return document.cookie")
    check(cookie == "", "the session cookie is HttpOnly (scripts cannot read it)")
    # Marks this page load: it must survive every step below (no reload).
    wd.js("window.__uiTestLoad = 'loaded-once'")
    wd.shot("02-unlicensed")

    # The page's key check is the CLI's (known answers from the docs).
    checks = wd.js("return ['7A3KD-0QPX4-M9VRT-2HBNE-C6WZA', '7A3KD-0QPX4-M9VRT-2HBNE-C6WZB',"
                   " '7A3KD\u00a00QPX4\u2013M9VRT-2HBNE-C6WZA', '7A3KD-0QPX4-M9VRT-2HBNE']"
                   ".map(k => { const c = window.licagentKey.check(k); return c.key || c.error; })")
    check(checks[0] == "7A3KD0QPX4M9VRT2HBNEC6WZA" and "typo" in checks[1]
          and checks[2] == checks[0] and "has 20 characters" in checks[3],
          f"the page checks keys with the CLI's rule ({checks})")

    # 2. A typo: the typo message, and nothing sent. The browser's own
    # record of its requests (Resource Timing) shows whether the page
    # called activate; the portal's record shows whether a request came.
    sent = "return performance.getEntriesByType('resource').filter(e => /api\\/v1\\/(activate|request-code)$/.test(e.name)).length"
    sent_before = wd.js(sent)
    agent_before = open(AGENT_LOG).read().count("activating with the portal")
    good = KEY.replace("-", "")
    i = 7
    typo_ch = "0" if good[i] != "0" else "1"
    typo = good[:i] + typo_ch + good[i + 1:]
    typo = "-".join(typo[j:j + 5] for j in range(0, 25, 5))
    wd.type("#key", typo)
    wd.click("#activate")
    msg = wd.wait("return document.getElementById('key-msg').textContent", "the typo message")
    check(msg and "typo" in msg and "no request was sent" in msg, f"a typo shows the typo message ({msg!r})")
    time.sleep(0.5)  # would a request be on its way, it would show by now
    shown = json.loads(run(PORTAL + ["--json", "pbx", "show", SERIAL]).stdout or "{}")
    check(wd.js(sent) == sent_before == 0
          and open(AGENT_LOG).read().count("activating with the portal") == agent_before
          and not shown.get("hardware_id") and not shown.get("activated_at"),
          "a typo sends nothing: no request from the browser, none to the portal")
    check(wd.js("return document.getElementById('key').value") == typo,
          "the key with a typo stays in the field to be fixed")
    wd.shot("03-typo")

    # 3. The right key, pasted the way a PDF gives it (non-breaking spaces,
    # an en dash): active, seats shown, the key redacted.
    pasted = KEY.replace("-", "\u00a0", 2).replace("-", "\u2013")
    wd.type("#key", pasted)
    wd.click("#activate")
    state = wd.wait("const s = document.getElementById('state').textContent; return s === 'Active' && s",
                    "the active state")
    check(state == "Active", "activating with the pasted key makes the page show Active")
    nxt = wd.js("return document.getElementById('next').textContent")
    check(nxt.startswith("Next: grace in "), f"the next step of the ladder and its time ({nxt!r})")
    # Users arrive from the shell: the page hears it through the events.
    r = run(AGENT + ["users", "import", E["UI_USERS_CSV"]])
    check(r.returncode == 0, f"licagent users import ({r.stderr.strip()})")
    bought = wd.wait(seat_cell("premium", "purchased"), "the premium seats")
    used = wd.wait(seat_cell("premium", "used").replace("return r ?", "return r && r.textContent === '7' ?"),
                   "7 premium users")
    over = wd.text("#seats tr[data-code=\"premium\"] td.over")
    check((bought, used, over) == ("5", "7", "2"), f"seats shown: premium bought 5, used 7, over 2 ({bought}, {used}, {over})")
    missing = wd.wait("return document.querySelectorAll('#missing tbody tr').length", "the users without a license")
    check(missing and missing >= 2, f"the users who miss a license are listed ({missing})")
    msg = wd.text("#key-msg")
    redacted = "#####-#####-#####-#####-" + KEY[-5:]
    source = wd.js("return document.documentElement.outerHTML")
    check(redacted in msg and KEY not in source and good not in source
          and wd.js("return document.getElementById('key').value") == "",
          f"after submitting, the field is empty and only {redacted} is shown")
    check(wd.text("#pbx-name") == "UI Test PBX", "the PBX name is shown")
    wd.shot("04-active")

    # 4. A seat change on the portal + `licagent refresh` from the shell:
    # the page shows it without a reload.
    r = run(PORTAL + ["pbx", "edit", SERIAL, "--seats", "premium=8,essential=10"])
    check(r.returncode == 0, f"licportal pbx edit ({r.stderr.strip()})")
    r = run(AGENT + ["refresh"])
    check(r.returncode == 0, f"licagent refresh ({r.stderr.strip()})")
    bought = wd.wait(seat_cell("premium", "purchased") .replace("return r ?", "return r && r.textContent === '8' ?"),
                     "the new seats")
    check(bought == "8", "the page shows the portal's new seats (premium 8) by itself")
    check(wd.js("return window.__uiTestLoad") == "loaded-once", "...without a reload")
    check(wd.text("#live") == "live", "the page says it is live (event stream open)")
    wd.shot("05-seats-changed")

    # 5. A viewer that may only read: the daemon's own /ui/ behind nginx,
    # whose workers run as nobody in the socket's group only.
    wd.go(VIEWER + "/licenses/")
    state = wd.wait("const t = document.getElementById('state').textContent; return !document.getElementById('page').hidden && t !== '…' && t",
                    "the viewer's page")
    check(state == "Active", f"the page behind nginx (the daemon's /ui/) shows the state ({state!r})")
    note = wd.wait("const n = document.getElementById('readonly'); return !n.hidden && n.textContent", "the read-only note")
    check(note and "Read-only" in note and "nobody" in note, f"it says why it is read-only ({note!r})")
    enabled = wd.js("return [...document.querySelectorAll('.change')].filter(e => !e.disabled).map(e => e.id)")
    count = wd.js("return document.querySelectorAll('.change').length")
    check(count > 5 and enabled == [], f"every change control is disabled ({count} controls, enabled: {enabled})")
    bought = wd.wait(seat_cell("premium", "purchased"), "the viewer's seats")
    check(bought == "8", "the viewer sees the seats")
    wd.shot("06-viewer-read-only")
    forced = wd.js_async(
        "const done = arguments[arguments.length - 1];"
        "fetch('api/v1/test-mode/start', {method: 'POST', headers: {'X-Licagent-UI': '1'}})"
        ".then(r => r.json().then(j => done([r.status, j.error && j.error.code])))"
        ".catch(e => done(['error', String(e)]));")
    check(forced == [403, "access_denied"], f"a forced change from the viewer's page is refused 403 ({forced})")
    csrf = wd.js_async(
        "const done = arguments[arguments.length - 1];"
        "fetch('api/v1/refresh', {method: 'POST'})"
        ".then(r => r.json().then(j => done([r.status, j.error && j.error.code])));")
    check(csrf == [403, "csrf_refused"], f"a change without X-Licagent-UI is refused ({csrf})")
    r = run(AGENT + ["status", "--check"])
    check(r.stdout.strip() == "active", f"the state did not change ({r.stdout.strip()})")

    # 6. The admin starts test mode; the viewer's page follows by itself.
    wd.js("window.__uiTestLoad = 'viewer-once'")
    wd.s("POST", "/window/new", {"type": "tab"})
    handles = wd.s("GET", "/window/handles")
    viewer_handle = wd.s("GET", "/window")
    admin_handle = [h for h in handles if h != viewer_handle][0]
    wd.s("POST", "/window", {"handle": admin_handle})
    wd.go(ADMIN + "/ui/")
    check(wd.wait("const s = document.getElementById('state').textContent; return s === 'Active' && s",
                  "the admin page again") == "Active",
          "the admin's session survives opening the page again (cookie)")
    wd.click("#test-start")
    state = wd.wait("const s = document.getElementById('state').textContent; return s === 'Test mode' && s", "test mode")
    check(state == "Test mode", "the admin starts test mode from the page")
    wd.shot("07-test-mode")
    wd.s("POST", "/window", {"handle": viewer_handle})
    state = wd.wait("const s = document.getElementById('state').textContent; return s === 'Test mode' && s",
                    "test mode on the viewer's page")
    check(state == "Test mode" and wd.js("return window.__uiTestLoad") == "viewer-once",
          "the viewer's page behind nginx shows test mode without a reload (events through the proxy)")
    wd.shot("08-viewer-test-mode")

    # 7. Deactivation is asked twice; cancelling the second question sends nothing.
    wd.s("POST", "/window", {"handle": admin_handle})
    wd.click("#deactivate")
    first = wd.wait("return document.getElementById('confirm').open && document.getElementById('confirm-text').textContent",
                    "the first question")
    check(first and "stops working" in first.replace("stop working", "stops working"),
          f"deactivation explains the consequences ({first!r})")
    wd.shot("09-deactivate-asked")
    wd.click("#confirm-ok")
    second = wd.wait("return document.getElementById('confirm').open && !document.getElementById('confirm-typed').hidden"
                     " && document.getElementById('confirm-ask').textContent", "the second question")
    check(second and "DEACTIVATE" in second, f"and asks a second time ({second!r})")
    wd.click("#confirm-cancel")
    msg = wd.wait("return document.getElementById('move-msg').textContent", "the cancel message")
    r = run(AGENT + ["status", "--check"])
    check(msg and "cancelled" in msg and r.stdout.strip() == "test",
          f"cancelled at the second question: nothing sent ({msg!r}, {r.stdout.strip()})")


def no_key_in_logs():
    """Nothing secret in a log: the key appears nowhere, only redacted."""
    work = E["UI_WORK"]
    plain = KEY.replace("-", "")
    found = []
    for name in sorted(os.listdir(work)):
        if name.endswith((".log", ".out")):
            text = open(os.path.join(work, name), errors="replace").read()
            if KEY in text or plain in text:
                found.append(name)
    check(not found, f"the PBX key is in no log ({found or 'none'})")


if __name__ == "__main__":
    os.makedirs(SHOTS, exist_ok=True)
    main()
    no_key_in_logs()
    print(f"ui: screenshots in {SHOTS}")
    print(f"ui: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)

#!/usr/bin/env python3
"""A small licagent client for PBX code, standard library only (Python 3.7+).

It speaks HTTP/1.1 over the agent's Unix socket and keeps the connection
open between questions (the agent closes it after 10 s idle; the client
reconnects once, transparently).

    from licagent_client import Licagent, UnknownUser, AgentUnreachable

    agent = Licagent("/run/licagent/api.sock")
    try:
        report = agent.entitlement(extension="201")
    except UnknownUser:
        ...                       # SIP: 404
    except AgentUnreachable:
        ...                       # SIP: 503 + Retry-After (see docs/api.md)
    if report["licensed"]:
        ...                       # let the user work
    else:
        print("License missing:", ",".join(Licagent.denial(report)))

From a shell (exit status 0 licensed, 1 not licensed, 2 unknown user,
3 agent unreachable, 4 other error; the answer as JSON on stdout):

    python3 licagent_client.py entitlement 201
    python3 licagent_client.py --socket /tmp/x/api.sock entitlement --user u42
    python3 licagent_client.py status
    python3 licagent_client.py users --unlicensed

Errors are read tolerantly: `{"error": {"code", "message"}}`, and the older
`{"error": "sentence"}` where a 404 from the entitlement route means an
unknown user.
"""

import argparse
import http.client
import json
import socket
import sys
import urllib.parse

DEFAULT_SOCKET = "/run/licagent/api.sock"


class LicagentError(Exception):
    """The agent answered with an error: HTTP status, code and message."""

    def __init__(self, status, code, message):
        super().__init__(f"licagent answered {status}" + (f" {code}" if code else "") + f": {message}")
        self.status = status
        self.code = code
        self.message = message


class UnknownUser(LicagentError):
    """The agent has no such user (404 unknown_user)."""


class AgentUnreachable(Exception):
    """No answer: socket missing, connection refused, timeout, or a 5xx."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("licagent", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Licagent:
    """One connection to the agent's API socket; not thread-safe (use one
    per thread)."""

    def __init__(self, path=DEFAULT_SOCKET, timeout=2.0):
        self.path = path
        self.timeout = timeout
        self._conn = None

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method, target, body=None):
        """Sends one request; returns (status, decoded JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            reused = self._conn is not None
            if not reused:
                self._conn = _UnixConnection(self.path, self.timeout)
            try:
                self._conn.request(method, target, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
            except socket.timeout as e:
                self.close()
                raise AgentUnreachable(f"licagent at {self.path} did not answer in time") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                # A kept connection the agent closed while idle: ask again
                # once on a new one.
                if reused and attempt == 1:
                    continue
                raise AgentUnreachable(f"licagent at {self.path} unreachable: {e}") from e
            if resp.will_close:
                self.close()
            try:
                doc = json.loads(raw) if raw else None
            except ValueError:
                doc = None
            return resp.status, doc
        raise AgentUnreachable(f"licagent at {self.path} unreachable")

    def _get(self, target, entitlement_route=False):
        status, doc = self.request("GET", target)
        if 200 <= status < 300:
            return doc
        code, message = None, ""
        if isinstance(doc, dict):
            err = doc.get("error")
            if isinstance(err, dict):
                code, message = err.get("code"), err.get("message", "")
            elif isinstance(err, str):
                message = err
        if status >= 500:
            raise AgentUnreachable(f"licagent answered {status}: {message}")
        if status == 404 and (code == "unknown_user" or (code is None and entitlement_route)):
            raise UnknownUser(status, code or "unknown_user", message)
        raise LicagentError(status, code, message)

    def entitlement(self, extension=None, user=None):
        """The user's report: licensed, reason, missing, profile, addons."""
        if (extension is None) == (user is None):
            raise ValueError("give exactly one of extension or user")
        query = {"extension": extension} if extension is not None else {"user": user}
        return self._get("/v1/entitlement?" + urllib.parse.urlencode(query), True)

    def status(self):
        return self._get("/v1/status")

    def users(self, licensed=None):
        query = "" if licensed is None else "?licensed=" + ("true" if licensed else "false")
        return self._get("/v1/users" + query)

    @staticmethod
    def denial(report):
        """What a 403 should name: the missing codes, else the reason code."""
        missing = report.get("missing")
        if isinstance(missing, list) and missing:
            return [str(c) for c in missing]
        if isinstance(report.get("reason"), str):
            return [report["reason"]]
        profile = report.get("profile")
        if not isinstance(profile, dict):
            return ["no_profile"]
        if isinstance(profile.get("reason"), str):
            return [profile["reason"]]
        return ["not_licensed"]


def main(argv=None):
    p = argparse.ArgumentParser(description="Ask licagent over its Unix socket.")
    p.add_argument("--socket", default=DEFAULT_SOCKET)
    p.add_argument("--timeout", type=float, default=2.0)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("entitlement", help="may this user work? exit 0 yes, 1 no")
    e.add_argument("extension", nargs="?")
    e.add_argument("--user")
    sub.add_parser("status")
    u = sub.add_parser("users")
    u.add_argument("--unlicensed", action="store_true")
    args = p.parse_args(argv)

    agent = Licagent(args.socket, args.timeout)
    try:
        if args.cmd == "entitlement":
            if (args.extension is None) == (args.user is None):
                p.error("give an extension or --user ID")
            doc = agent.entitlement(extension=args.extension, user=args.user)
            print(json.dumps(doc, indent=2))
            return 0 if doc.get("licensed") is True else 1
        if args.cmd == "status":
            doc = agent.status()
        else:
            doc = agent.users(licensed=False if args.unlicensed else None)
        print(json.dumps(doc, indent=2))
        return 0
    except UnknownUser as err:
        print(json.dumps({"error": {"code": err.code, "message": err.message}}))
        return 2
    except AgentUnreachable as err:
        print(json.dumps({"error": {"code": "unreachable", "message": str(err)}}))
        return 3
    except LicagentError as err:
        print(json.dumps({"error": {"code": err.code, "message": err.message}}))
        return 4
    finally:
        agent.close()


if __name__ == "__main__":
    sys.exit(main())

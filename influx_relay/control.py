"""Talking to a running relay from the command line: ``influx-relay status``,
``gaps`` and ``repair`` read and drive the relay through its own HTTP
endpoints (/status, /admin/repair), found from the same config file.

urllib3 earns its place here: these are short-lived, blocking clients of the
relay's API (maybe over TLS), where its pooling, timeouts and errors cost
nothing that matters. The relay itself talks to its backends with its own lean
client (:mod:`.httpclient`).
"""

import ipaddress
import json
from datetime import datetime, timezone

import urllib3

from . import text
from .errors import RelayError

_LOCAL = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "localhost": "127.0.0.1"}


class Unreachable(RelayError):
    """The relay does not answer (not running, another address, a firewall)."""


class RelayClient(object):
    """Requests to one HTTP listener of a running relay, per its config."""

    def __init__(self, cfg, listener=None, timeout=10.0):
        listeners = cfg.http
        if not listeners:
            raise RelayError("%s has no [[http]] listener to ask" % cfg.path)
        if listener is None:
            chosen = listeners[0]
        else:
            chosen = next((lst for lst in listeners if lst.name == listener), None)
            if chosen is None:
                raise RelayError("%s has no [[http]] listener named %r (it has: %s)" % (
                    cfg.path, listener, ", ".join(lst.name for lst in listeners)))
        self.listener = chosen
        host = _LOCAL.get(chosen.host, chosen.host)
        shown = "[%s]" % host if ":" in host else host
        scheme = "https" if chosen.ssl_combined_pem else "http"
        self.url = "%s://%s:%d" % (scheme, shown, chosen.port)
        self.where = "listener %r of %s (%s)" % (chosen.name, cfg.path, self.url)
        kwargs = {}
        if scheme == "https" and _loopback(host):
            # The relay's own certificate names its public host, not this one.
            kwargs = {"cert_reqs": "CERT_NONE", "assert_hostname": False}
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(timeout), **kwargs)

    def request(self, method, path, admin=False):
        """``(status, decoded JSON body)``; :class:`Unreachable` if no answer."""
        headers = {}
        if admin and self.listener.admin_token:
            headers["Authorization"] = "Bearer " + self.listener.admin_token
        try:
            r = self.http.request(method, self.url + path, headers=headers)
        except urllib3.exceptions.HTTPError as e:
            reason = str(getattr(e, "reason", None) or e).rsplit(": ", 1)[-1]
            raise Unreachable("no answer from the relay's %s: %s. Is it running? "
                              "(systemctl status influxdb-relay)" % (self.where, reason))
        try:
            body = json.loads(r.data.decode("utf-8")) if r.data else None
        except ValueError:
            body = {"error": r.data[:200].decode("utf-8", "replace")}
        return r.status, body

    def get_json(self, path, admin=False):
        status, body = self.request("GET", path, admin)
        if status != 200:
            raise RelayError("%s %s answered %d: %s" % (self.where, path, status, _error(body)))
        return body


def _error(body):
    if isinstance(body, dict):
        return body.get("error") or body.get("message") or json.dumps(body)[:200]
    return str(body)[:200]


def _loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- what the commands print -----------------------------------------------------------

def age(seconds):
    return text.duration(seconds) if seconds else "-"


def count(n):
    return "{:,}".format(n) if n else "-"


def table(rows, header):
    """Columns as wide as their widest cell, left-aligned but for numbers."""
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def status_lines(body):
    """``influx-relay status``: a row per output of one listener."""
    outputs = body.get("outputs", {})
    rows = []
    for name, o in outputs.items():
        dropped = ", ".join("%s %d" % (k[len("dropped_"):], v) for k, v in sorted(o.items())
                            if k.startswith("dropped_") and v)
        replay = o.get("replay")
        if replay:
            eta = replay.get("eta_s")
            shown = "%s%%, %s pts/s%s" % (replay["percent"], count(replay["points_per_s"]),
                                         ", %s left" % age(eta) if eta else "")
        else:
            shown = "-"
        rows.append([
            name, o.get("state", "?"),
            text.size(o.get("buffered_bytes", 0)) if o.get("buffer", True) is not None else "no buffer",
            count(o.get("buffered_writes", 0)), age(o.get("oldest_age_seconds", 0)),
            dropped or "-", count(o.get("gaps", {}).get("points", 0)), shown,
        ])
    head = "listener %s: %d output(s)" % (json.dumps(body.get("listener")), len(outputs))
    repair = body.get("repair")
    lines = [head, table(rows, ["OUTPUT", "STATE", "BACKLOG", "WRITES", "OLDEST", "DROPPED",
                                "GAP POINTS", "REPLAY"])]
    if repair:
        lines.append("repair: " + repair_line(repair))
    return "\n".join(lines)


def when(ns):
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def gaps_lines(body):
    """``influx-relay gaps``: a row per range an output misses."""
    rows = []
    for name, o in body.get("outputs", {}).items():
        for r in o.get("gaps", {}).get("ranges", []):
            rows.append([name, r["db"] or "(unknown)", r["rp"] or "(default)", when(r["start"]),
                         when(r["end"]), count(r["points"]),
                         ", ".join("%s %d" % kv for kv in sorted(r["reasons"].items()))])
    head = "listener %s: " % json.dumps(body.get("listener"))
    if not rows:
        return head + "no gaps: every output holds every point the others stored"
    total = sum(o.get("gaps", {}).get("points", 0) for o in body.get("outputs", {}).values())
    return head + "%s point(s) missing in %d range(s)\n%s" % (
        count(total), len(rows), table(rows, ["OUTPUT", "DB", "RP", "FROM", "TO", "POINTS",
                                              "REASONS"]))


def repair_line(job):
    """One line on a repair job: ranges, points copied, rate, time left."""
    done, total = job.get("ranges_done", 0), job.get("ranges", 0)
    rate = job.get("points_per_s", 0)
    eta = job.get("eta_s")
    parts = ["%s" % job.get("state"), "%d/%d range(s)" % (done, total),
             "%s point(s) copied" % count(job.get("points_copied", 0)) if job.get("points_copied")
             else "0 points copied"]
    if rate:
        parts.append("%s points/s" % count(int(rate)))
    if eta:
        parts.append("%s left" % age(eta))
    return ", ".join(parts)


def progress_bar(job, width=30):
    """``[#######.......] 45%`` from a job's points copied of points to copy."""
    total = max(job.get("points_total", 0), 1)
    share = min(1.0, job.get("points_copied", 0) / total)
    filled = int(round(share * width))
    return "[%s%s] %3d%%" % ("#" * filled, "." * (width - filled), share * 100)


def plan_lines(plan):
    """``influx-relay repair --dry-run``: each range, and the peer it would come from."""
    if not plan:
        return "nothing to repair: no output misses points the others hold"
    rows = [[p["output"], p["db"] or "(unknown)", p["rp"] or "(default)", when(p["start"]),
             when(p["end"]), count(p["points"]), p.get("from") or "-", p.get("reason", "")]
            for p in plan]
    return table(rows, ["OUTPUT", "DB", "RP", "FROM", "TO", "POINTS", "COPY FROM", "WHY NOT"])

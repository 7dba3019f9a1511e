"""Repairs: copying back, from a peer that holds them, the points an output misses.

A listener's outputs are replicas of each other. For each range the gap ledger
(:mod:`.ledger`) holds for an output, a :class:`Job` picks a peer output of
the same listener that may serve it (its backend answers, it has no backlog, and
no gap of its own overlapping the range) and has :func:`.repair.copy_range`
copy the range, slice by slice; each slice written whole leaves the ledger at
once, so a repair stopped (or a relay killed) midway resumes where it was. An
output is repaired only once it answers and its own backlog is delivered:
copied points must not be overtaken by older buffered writes of the same points.

A job runs when asked (``POST /admin/repair``, ``influx-relay repair``) or, with
``repair = "auto"`` on the listener, by itself: every few seconds the
:class:`Repairer` looks for an output with gaps that is ready to take them.
Both are paced by ``repair-rate-limit`` (points/s).

A point overwritten by a client while its range is being repaired may end with
the copied (older) value on the repaired output: repair runs are for ranges of
the past, which clients seldom rewrite (README, Replicas that converge).
"""

import logging
import time

import gevent

from . import repair as engine

log = logging.getLogger(__name__)

#: Seconds between two looks for an output to repair, with repair = "auto".
AUTO_EVERY = 5.0
#: After a job that could not repair an output: seconds before trying it again
#: by itself (doubling up to the maximum).
AUTO_BACKOFF = 30.0
AUTO_BACKOFF_MAX = 600.0


class Task(object):
    """One range of one output to copy back."""

    __slots__ = ("output", "range", "source", "state", "reason", "points")

    def __init__(self, output, rng):
        self.output = output
        self.range = rng
        self.source = None
        self.state = "waiting"  # waiting, copying, done, failed
        self.reason = None
        self.points = 0

    def as_dict(self):
        r = self.range
        out = {"output": self.output.name, "db": r.db, "rp": r.rp, "start": r.start, "end": r.end,
               "points": r.points, "state": self.state, "copied": self.points}
        if self.source is not None:
            out["from"] = self.source.name
        if self.reason:
            out["reason"] = self.reason
        return out


class Job(object):
    """Repairing some outputs of one listener, range after range."""

    def __init__(self, repairer, outputs, headers=None, automatic=False):
        self.repairer = repairer
        self.outputs = outputs
        self.headers = headers
        self.automatic = automatic
        ledger = repairer.ledger
        self.tasks = [Task(o, r) for o in outputs for r in ledger.ranges(o.who)]
        self.points_total = sum(t.range.points for t in self.tasks)
        self.points_copied = 0
        self.started = time.monotonic()
        self.finished = None
        self.state = "running"
        self._stop = False
        self._greenlet = None

    def start(self):
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self):
        self._stop = True

    def wait(self, timeout=None):
        if self._greenlet is not None:
            self._greenlet.join(timeout)

    def _run(self):
        kind = "automatic repair" if self.automatic else "repair"
        log.info("listener %s: %s of %s: %d range(s), about %d point(s)", self.repairer.name, kind,
                 ", ".join(o.name for o in self.outputs), len(self.tasks), self.points_total)
        try:
            for task in self.tasks:
                if self._stop:
                    task.state, task.reason = "failed", "stopped"
                    continue
                self._repair(task)
        except BaseException:
            log.exception("listener %s: %s ended by an error", self.repairer.name, kind)
            raise
        finally:
            self.finished = time.monotonic()
            failed = [t for t in self.tasks if t.state != "done"]
            self.state = "stopped" if self._stop else "failed" if failed else "done"
            log.log(logging.WARNING if failed else logging.INFO,
                    "listener %s: %s %s: %d of %d range(s), %d point(s) copied in %.1fs%s",
                    self.repairer.name, kind, self.state, len(self.tasks) - len(failed),
                    len(self.tasks), self.points_copied, self.finished - self.started,
                    "; not repaired: " + "; ".join("%s %s/%s: %s" % (
                        t.output.name, t.range.db or "?", t.range.rp or "(default)", t.reason)
                        for t in failed[:5]) if failed else "")

    def _repair(self, task):
        output, rng = task.output, task.range
        ledger = self.repairer.ledger
        ready = output.readiness(self.repairer.cache_s)
        if ready.status == "down" or ready.status == "lagging":
            task.state, task.reason = "failed", "%s is not ready to take it: %s" % (
                output.name, ready.reason)
            return
        source, why = self.repairer.source_for(output, rng)
        if source is None:
            task.state, task.reason = "failed", why
            return
        task.source, task.state = source, "copying"
        base = self.points_copied

        def progress(points):
            task.points = points
            self.points_copied = base + points

        def slice_done(start, end):
            ledger.repaired(output.who, rng.db, rng.rp, start, end)

        result = engine.copy_range(
            source, output, rng.db, rng.rp, rng.start, rng.end, headers=self.headers,
            limiter=self.repairer.limiter, progress=progress, should_stop=lambda: self._stop,
            slice_done=slice_done, default_rp=self.repairer.cfg.default_retention_policy,
            expected_points=rng.points)
        self.points_copied = base + result.points
        if result.done:
            ledger.repaired(output.who, rng.db, rng.rp, rng.start, rng.end)
            task.state = "done"
        else:
            task.state, task.reason = "failed", result.reason or "not copied"

    def as_dict(self):
        elapsed = (self.finished or time.monotonic()) - self.started
        rate = self.points_copied / elapsed if elapsed > 0 else 0
        left = max(0, self.points_total - self.points_copied)
        return {
            "state": self.state, "automatic": self.automatic,
            "outputs": [o.name for o in self.outputs],
            "ranges": len(self.tasks),
            "ranges_done": sum(1 for t in self.tasks if t.state == "done"),
            "points_total": self.points_total, "points_copied": self.points_copied,
            "points_per_s": round(rate), "running_s": round(elapsed, 1),
            "eta_s": round(left / rate) if rate and self.state == "running" else None,
            "tasks": [t.as_dict() for t in self.tasks],
        }


class Repairer(object):
    """The repairs of one HTTP listener's outputs: the job asked for or running
    by itself, and the choice of a peer to copy from."""

    def __init__(self, app, ledger):
        self.app = app
        self.cfg = app.cfg
        self.name = app.cfg.name
        self.ledger = ledger
        self.cache_s = app.cfg.health_cache_ms / 1000.0
        self.limiter = engine.limiter(app.cfg.repair_rate_limit)
        self.job = None
        self._auto = None
        self._backoff = {}  # output name -> (next try, delay)

    @property
    def outputs(self):
        return self.app.fanout.outputs

    def start(self):
        if self.cfg.repair == "auto" and self._auto is None and len(self.outputs) > 1:
            self._auto = gevent.spawn(self._automatic)

    def stop(self):
        if self._auto is not None:
            self._auto.kill(block=False)
            self._auto = None
        if self.job is not None and self.job.state == "running":
            self.job.stop()

    def source_for(self, target, rng):
        """A peer of ``target`` that holds all of ``rng``: ``(output, None)``, or
        ``(None, why there is none)``."""
        if not rng.db:
            return None, ("the database is unknown (a damaged buffer record): nothing to copy "
                          "from; influx-relay gaps shows its time range")
        reasons = []
        for peer in self.outputs:
            if peer is target:
                continue
            if self.ledger.overlaps(peer.who, rng.db, rng.rp, rng.start, rng.end):
                reasons.append("%s misses points of that range too" % peer.name)
                continue
            ready = peer.readiness(self.cache_s)
            if ready.status == "ready":
                return peer, None
            reasons.append("%s is %s (%s)" % (peer.name, ready.status, ready.reason))
        return None, "no complete peer to copy from: " + ("; ".join(reasons) or "no other output")

    def plan(self, names=None):
        """What a repair would do now: each range, and the peer it would be
        copied from, or why it cannot be."""
        out = []
        for output in self._wanted(names):
            for rng in self.ledger.ranges(output.who):
                source, why = self.source_for(output, rng)
                item = Task(output, rng).as_dict()
                del item["state"], item["copied"]
                if source is not None:
                    item["from"] = source.name
                else:
                    item["reason"] = why
                out.append(item)
        return out

    def _wanted(self, names):
        return [o for o in self.outputs if not names or o.name in names]

    def begin(self, names=None, headers=None, automatic=False):
        """Start a job for ``names`` (every output by default) unless one runs;
        the job (the running one if so) and whether it is new."""
        if self.job is not None and self.job.state == "running":
            return self.job, False
        outputs = [o for o in self._wanted(names) if self.ledger.points(o.who)]
        self.job = Job(self, outputs, headers, automatic).start()
        return self.job, True

    def _automatic(self):
        while True:
            gevent.sleep(AUTO_EVERY)
            if self.job is not None and self.job.state == "running":
                continue
            now = time.monotonic()
            due = [o for o in self.outputs if self.ledger.points(o.who)
                   and self._backoff.get(o.name, (0, 0))[0] <= now
                   and o.readiness(self.cache_s).status in ("gap", "ready")]
            if not due:
                continue
            job, _ = self.begin([o.name for o in due], automatic=True)
            job.wait()
            for output in due:
                if self.ledger.points(output.who):
                    delay = min(AUTO_BACKOFF_MAX, self._backoff.get(output.name, (0, AUTO_BACKOFF / 2))[1] * 2)
                    self._backoff[output.name] = (time.monotonic() + delay, delay)
                else:
                    self._backoff.pop(output.name, None)

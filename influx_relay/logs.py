"""Logging setup: text or JSON lines on stderr, with credentials redacted.

Logs go to stderr only (journald under systemd), so there is no file to
reopen on SIGHUP. :class:`RedactFilter` sits on the handler, so every record
passes through it, the relay's own and its libraries' alike: it is a safety
net behind the rule that credentials are never logged in the first place.

When stderr is the journal (systemd says so in ``$JOURNAL_STREAM``), text
lines carry no timestamp of their own, since the journal stamps every line,
and start with a syslog priority (``<4>``), which journald turns into the
entry's priority (``journalctl -p warning``) and strips.
"""

import datetime
import json
import logging
import os
import re
import sys
import time

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"

#: syslog priorities (journald reads a "<N>" prefix) from the lowest level up.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
               (logging.INFO, 6))

_MASK = "***"
_PATTERNS = [
    # Query parameters: p=secret (InfluxDB 1.x password), password=, token=.
    (re.compile(r"(?i)(?<![A-Za-z0-9_])(p|password|token)=[^&\s\"',;]+"), r"\1=" + _MASK),
    # An Authorization header value, whatever the scheme.
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(?:(basic|bearer|token)\s+)?[^\s'\",}]+"),
     lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + _MASK),
    # Credentials found on their own: "Basic dXNlcjpwYXNz", "Bearer x", "Token x".
    (re.compile(r"\b(Basic|Bearer|Token) [A-Za-z0-9+/=._~-]{6,}"), r"\1 " + _MASK),
    # user:password@ in a URL.
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + _MASK + "@"),
]


def redact(text):
    """``text`` with passwords, tokens and Authorization values masked."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactFilter(logging.Filter):
    """Masks credentials in a record's message and exception text."""

    _formatter = logging.Formatter()

    def filter(self, record):
        try:
            message = record.getMessage()
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            if record.stack_info:
                record.stack_info = redact(record.stack_info)
        except Exception:  # a log line must never take the relay down
            pass
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception)."""

    def format(self, record):
        out = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


class JournalFormatter(logging.Formatter):
    """Text lines for journald: a syslog priority prefix and no timestamp."""

    def __init__(self):
        super().__init__(JOURNAL_FORMAT)

    def format(self, record):
        priority = next((p for level, p in _PRIORITIES if record.levelno >= level), 7)
        text = super().format(record)
        # journald reads one entry per line: a traceback's lines keep the priority.
        return "\n".join("<%d>%s" % (priority, line) for line in text.split("\n"))


def is_journal(stream, environ=None):
    """Whether ``stream`` is the journal: systemd puts the device and inode of
    the stream it connected to stdout/stderr in ``$JOURNAL_STREAM``
    ("dev:ino"), and the variable is inherited by children that may have
    redirected stderr elsewhere, so the file itself is compared (as
    systemd.exec(5) says to)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (AttributeError, OSError, ValueError, TypeError):  # no fd (StringIO), bad value
        return False


class WorkerFilter(logging.Filter):
    """Starts each line of a worker process with ``worker N:``."""

    def __init__(self, index):
        super().__init__()
        self.prefix = "worker %d: " % index

    def filter(self, record):
        if not getattr(record, "_worker_tagged", False):
            record.msg = self.prefix + str(record.msg)
            record._worker_tagged = True
        return True


def setup(verbose=False, fmt="text", stream=None, worker=None):
    """Log to ``stream`` (stderr) at INFO, or DEBUG with ``verbose``, as text or JSON;
    a worker's lines (``worker``: its index) say which it is.

    Text to the journal (see :func:`is_journal`) leaves the timestamp to it."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        formatter = JSONFormatter()
    elif is_journal(stream):
        formatter = JournalFormatter()
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    if worker is not None:
        handler.addFilter(WorkerFilter(worker))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # urllib3 speaks of every connection it opens at DEBUG: too much even for -v.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return handler


class Throttled(object):
    """A log call for an event that can repeat thousands of times a second
    (a flood of bad datagrams): at most one record per ``interval`` seconds;
    the next one says how many like it were left out meanwhile."""

    def __init__(self, logger, level=logging.WARNING, interval=10.0):
        self.logger = logger
        self.level = level
        self.interval = interval
        self._next = 0.0
        self._skipped = 0

    def __call__(self, msg, *args):
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        self._next = now + self.interval
        if self._skipped:
            msg += " (and %d more like it in the last %gs, not logged)"
            args += (self._skipped, self.interval)
            self._skipped = 0
        self.logger.log(self.level, msg, *args)


def route_hub_errors(hub):
    """Log, through the handlers :func:`setup` made, the error of a greenlet that
    nobody waits for (a bug), which gevent's ``hub`` would print raw on stderr:
    one record, redacted, and JSON with ``--log-format json``."""
    logger = logging.getLogger("gevent.hub")

    def print_exception(context, t, v, tb):
        try:
            if context is not None and not isinstance(context, str):
                try:
                    context = hub.format_context(context)
                except Exception:
                    context = repr(context)
            if v is None:
                logger.error("uncaught %s in %s", getattr(t, "__name__", t), context or "the hub")
            else:
                logger.error("uncaught error in %s", context or "the hub", exc_info=(t, v, tb))
        except Exception:  # a log line must never take the relay down
            pass

    hub.print_exception = print_exception

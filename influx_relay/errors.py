"""The relay's exceptions.

Every error the relay raises on purpose derives from :class:`RelayError`, so a
caller can tell our own failures from bugs.
"""


class RelayError(Exception):
    """Base class of the relay's own errors."""


class ConfigError(RelayError):
    """A configuration file that cannot be used.

    ``str()`` is one line naming the file, the key path and the bad value, ready
    to print on stderr.
    """


class LineProtocolError(RelayError):
    """A request body that is not line protocol.

    ``lineno`` is 1-based and counts every line of the (decoded) body, blank
    ones included, the way a user counts them in an editor.
    """

    #: How much of a bad line an error message quotes.
    MAX_QUOTE = 128

    def __init__(self, lineno, line, reason):
        self.lineno = lineno
        self.line = line
        self.reason = reason
        text = line.decode("utf-8", "replace")
        if len(text) > self.MAX_QUOTE:
            text = text[: self.MAX_QUOTE] + "..."
        super().__init__("unable to parse line %d %r: %s" % (lineno, text, reason))


class BackendError(RelayError):
    """A backend that could not be reached or did not answer in time."""

    def __init__(self, backend, msg):
        self.backend = backend
        self.reason = msg
        super().__init__("%s: %s" % (backend, msg))

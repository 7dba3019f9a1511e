"""[[filter]] tables: which lines of a write each HTTP output takes.

Filtering is per point, not per request (veepee-oss/influxdb-relay drops the
whole request for an output when one point fails its filter): each output
gets the lines it takes, in order. A point goes to an output only if its
measurement matches every measurement expression, and each of its tag keys
matches every tag expression, of the filters naming that output. Expressions
match anywhere in the name, as Go's ``MatchString`` does.

Lines are stamped before they are filtered, so every output stores the same
time for a point. A listener without filters never gets here: its writes are
not split into series at all.
"""

from . import lineprotocol


class Router(object):
    """The filtered outputs of one listener."""

    def __init__(self, outputs):
        self.outputs = tuple(outputs)
        self.rules = []
        for output in self.outputs:
            filters = output.cfg.filters
            if filters:
                measurement = [f.measurement_expression for f in filters
                               if f.measurement_expression is not None]
                tags = [f.tag_expression for f in filters if f.tag_expression is not None]
                self.rules.append((output, measurement, tags))

    def __bool__(self):
        return bool(self.rules)

    def split(self, lines, body):
        """``{output: body}``: ``body`` for unfiltered outputs, the lines it takes
        (joined, ``b""`` for none) for each filtered one."""
        rules = self.rules
        taken = [[] for _ in rules]
        verdicts = {}  # a series key seen before is not matched again
        for line in lines:
            key = lineprotocol.series_key(line)
            verdict = verdicts.get(key)
            if verdict is None:
                measurement, tag_keys = lineprotocol.parse_series_key(key)
                verdict = verdicts[key] = [
                    i for i, (_, m, t) in enumerate(rules) if takes(m, t, measurement, tag_keys)
                ]
            for i in verdict:
                taken[i].append(line)
        bodies = {output: body for output in self.outputs}
        for (output, _, _), kept in zip(rules, taken):
            bodies[output] = body if len(kept) == len(lines) else b"\n".join(kept)
        return bodies


def takes(measurement_patterns, tag_patterns, measurement, tag_keys):
    """Whether a point passes one output's filters."""
    for pattern in measurement_patterns:
        if pattern.search(measurement) is None:
            return False
    for pattern in tag_patterns:
        for key in tag_keys:
            if pattern.search(key) is None:
                return False
    return True

"""sample.toml against the settings config.py declares: every setting is shown in
its table, with its doc above it and its default as its value, and nothing in
the file (commented examples included) is a key the relay does not know.

The file is read line by line, commented lines too: ``# key = value`` is a
setting shown commented out, ``# [[http.output]]`` a table header of an
example, and the comment lines right above a key (or a table's first header)
are its doc.
"""

import re
import textwrap
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import pytest

from influx_relay import config
from influx_relay.config import NO_DEFAULT, settings

SAMPLE = Path(__file__).resolve().parents[2] / "sample.toml"

_HEADER = re.compile(r"^\[\[([a-z.]+)\]\]$")
_KEY = re.compile(r"^([A-Za-z0-9_-]+) = (.*)$")
_RULE = re.compile(r"^-+$")


class Shown(object):
    """One setting as sample.toml shows it (a key line, or a table's header)."""

    def __init__(self, lineno, section, key, value, commented, doc):
        self.lineno, self.section, self.key = lineno, section, key
        self.value, self.commented, self.doc = value, commented, doc

    def __repr__(self):
        return "sample.toml:%d: %s" % (self.lineno, ".".join(self.section + (self.key,)))


def _strip(line):
    """(how many "#" the line is commented out with, what is left)."""
    depth = 0
    text = line.strip()
    while text.startswith("#"):
        depth += 1
        text = text[1:].strip()
    return depth, text


def _is_prose(line):
    depth, text = _strip(line)
    return depth > 0 and text and not (_KEY.match(text) or _HEADER.match(text)
                                       or _RULE.match(text))


def _doc_above(lines, i, skip_blank=False):
    """The comment paragraph right above line ``i``, as one line of text."""
    j = i - 1
    while skip_blank and j >= 0 and not lines[j].strip():
        j -= 1
    found = []
    while j >= 0 and _is_prose(lines[j]):
        found.append(_strip(lines[j])[1])
        j -= 1
    return " ".join(reversed(found))


def _value(lines, i, text):
    """The TOML value starting on line ``i`` with ``text``, read on across
    lines until it parses (an inline array of tables); (value, next line)."""
    j = i + 1
    while True:
        try:
            return tomllib.loads("v = " + text)["v"], j
        except tomllib.TOMLDecodeError:
            if j >= len(lines):
                raise AssertionError("sample.toml:%d: a value that never parses" % (i + 1))
            text += "\n" + _strip(lines[j])[1]
            j += 1


def shown_settings(path=SAMPLE):
    """Every setting shown in the file, in order, as :class:`Shown`."""
    lines = path.read_text().splitlines()
    section = ()
    out = []
    i = 0
    while i < len(lines):
        depth, text = _strip(lines[i])
        header, key = _HEADER.match(text), _KEY.match(text)
        if header:
            section = tuple(header.group(1).split("."))
            out.append(Shown(i + 1, section[:-1], section[-1], None, depth > 0,
                             _doc_above(lines, i, skip_blank=True)))
        elif key:
            value, following = _value(lines, i, key.group(2))
            out.append(Shown(i + 1, section, key.group(1), value, depth > 0,
                             _doc_above(lines, i)))
            i = following
            continue
        i += 1
    return out


def table_class(section):
    """The config dataclass of the table at ``section``, e.g. ("http", "output")."""
    cls = config.Config
    for key in section:
        cls = settings(cls)[key].table
    return cls


def every_table():
    """(section, class) of every table, the top level first."""
    found = [((), config.Config)]
    for section, cls in found:
        for s in settings(cls).values():
            if s.table is not None:
                found.append((section + (s.key,), s.table))
    return found


def wrapped(doc):
    """A doc as sample.toml should show it: comment lines of at most 80 columns."""
    return "\n".join(textwrap.wrap(doc, 78, initial_indent="# ", subsequent_indent="# ",
                                   break_on_hyphens=False))


SHOWN = shown_settings()


def first_shown(section, key):
    for shown in SHOWN:
        if shown.section == section and shown.key == key:
            return shown
    return None


def test_nothing_in_the_sample_is_unknown():
    for shown in SHOWN:
        known = settings(table_class(shown.section))
        assert shown.key in known, "%r: unknown key (known: %s)" % (shown, ", ".join(known))
        s = known[shown.key]
        if s.table is not None and shown.value is not None:  # an inline array of tables
            assert isinstance(shown.value, list), shown
            inner = settings(s.table)
            for table in shown.value:
                assert set(table) <= set(inner), "%r: unknown key in %r" % (shown, table)


@pytest.mark.parametrize("section, cls", every_table(),
                         ids=lambda v: ".".join(v) if isinstance(v, tuple) else "")
def test_every_setting_is_shown_with_its_doc_and_default(section, cls):
    for key, s in settings(cls).items():
        shown = first_shown(section, key)
        where = ".".join(section + (key,))
        assert shown is not None, "sample.toml does not show %s" % where
        if s.doc:
            assert shown.doc == s.doc, (
                "%r: the comment above it is not the doc config.py declares; it should read:"
                "\n%s" % (shown, wrapped(s.doc)))
        if s.table is not None:
            continue
        if s.default is None:
            # No default: an example value, commented out so that it sets nothing.
            assert shown.commented, "%r: an optional key shown set (comment it out)" % shown
        elif s.default is not NO_DEFAULT:
            assert not shown.commented, "%r: a default shown commented out" % shown
            assert shown.value == s.default, "%r: shows %r, the default is %r" % (
                shown, shown.value, s.default)


def test_every_setting_has_a_doc():
    for section, cls in every_table():
        if cls is config.Endpoints:
            continue  # shown in the inline table of "endpoints", documented there
        for key, s in settings(cls).items():
            assert s.doc, "%s has no doc" % ".".join(section + (key,))


def test_every_endpoint_is_shown_with_its_default():
    shown = first_shown(("http", "output"), "endpoints")
    assert shown.value == config.defaults(config.Endpoints)
    assert set(shown.value) == set(settings(config.Endpoints))


def test_the_reader_sees_commented_examples():
    # The reader above finds what it should, so that the tests above can fail.
    keys = {(s.section, s.key) for s in SHOWN}
    assert (("http", "output"), "org") in keys            # only in the commented v2 example
    assert ((), "filter") in keys and (("filter",), "tag-expression") in keys
    assert first_shown(("http", "output"), "buffer-path").commented
    assert first_shown(("http",), "max-body-size").value == 25000000
    original = [s for s in SHOWN if s.section == ("http",) and s.key == "output" and s.value]
    assert [o["location"] for o in original[0].value] == [
        "http://127.0.0.1:8086/write", "http://127.0.0.1:7086/write"]

"""The two line scanners the scanner tests run against, each test once with each:
the pure-Python reference (``lineprotocol.python_scan``) and the C one
(``influx_relay/_lineprotocol.c``), whichever ``lineprotocol.scan`` is here.

The C scanner must be built (``pip install -e .`` and scripts/test.sh build it
in place): a test of it fails, rather than skips, when it is not.
"""

from types import SimpleNamespace

import pytest

from influx_relay import lineprotocol


def c_module():
    try:
        from influx_relay import _lineprotocol
    except ImportError as e:
        pytest.fail("the C line scanner is not built (%s): run `python3 setup.py build_ext "
                    "--inplace` or `pip install -e .`" % e)
    return _lineprotocol


def scanner_named(name):
    if name == "python":
        return SimpleNamespace(name=name, scan=lineprotocol.python_scan,
                               prepare=lineprotocol.python_prepare)
    c = c_module()
    return SimpleNamespace(name=name, scan=c.scan, prepare=c.prepare)


@pytest.fixture(scope="session", params=["python", "c"])
def scanner(request):
    """``.scan`` and ``.prepare`` of one implementation (and its ``.name``)."""
    return scanner_named(request.param)

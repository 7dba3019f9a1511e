import os
import re
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

here = Path(__file__).resolve().parent
version = re.search(
    r'^__version__ = "([^"]+)"', (here / "influx_relay" / "__init__.py").read_text(), re.M
).group(1)

# The line scanner in C (influx_relay/_lineprotocol.c). Without a compiler or
# Python's headers the relay still installs, and uses the pure-Python scanner;
# INFLUX_RELAY_REQUIRE_C=1 (the .deb and .rpm builds) makes that an error.
REQUIRE_C = os.environ.get("INFLUX_RELAY_REQUIRE_C", "") not in ("", "0")
scanner = Extension(
    "influx_relay._lineprotocol",
    sources=["influx_relay/_lineprotocol.c"],
    optional=not REQUIRE_C,
)


class BuildExt(build_ext):
    """build_ext that says plainly what a failed optional build means."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # a compiler's failure comes as several distutils errors
            if not ext.optional:
                raise
            sys.stderr.write(
                "\nWARNING: the C line scanner (%s) could not be built: %s\n"
                "WARNING: influx-relay will use its pure-Python scanner, ten times slower or "
                "more\nWARNING: (install a C compiler and Python's headers, e.g. "
                "gcc and python3-dev, and reinstall to get it).\n\n" % (ext.name, e))


setup(
    name="influx-relay",
    version=version,
    description="High-availability write relay for InfluxDB (influxdb-relay compatible)",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["influx_relay", "influx_relay.*"]),
    ext_modules=[scanner],
    cmdclass={"build_ext": BuildExt},
    python_requires=">=3.9",
    install_requires=[
        "gevent>=22.10",
        "urllib3>=1.26,<3",
        "click>=8.1",
        "prometheus_client>=0.16",
        'tomli>=2.0; python_version < "3.11"',
    ],
    entry_points={
        "console_scripts": [
            "influx-relay = influx_relay.cli:main",
            "influxdb-relay = influx_relay.cli:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Database",
        "Topic :: System :: Networking",
    ],
)

import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).resolve().parent
version = re.search(
    r'^__version__ = "([^"]+)"', (here / "influx_relay" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="influx-relay",
    version=version,
    description="High-availability write relay for InfluxDB (influxdb-relay compatible)",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["influx_relay", "influx_relay.*"]),
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

"""Settings shared by every test directory (unit, integration, system)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "system: runs real influxd and influx-relay processes (needs /usr/bin/influxd)",
    )

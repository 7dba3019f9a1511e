"""influx-relay: a high-availability write path for InfluxDB."""

__version__ = "0.1.0"

"""``python -m influx_relay``: the same as the ``influx-relay`` command."""
from .cli import main

main()

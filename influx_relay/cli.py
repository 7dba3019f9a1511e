"""The command line: ``influx-relay run|check|status|gaps|repair --config PATH``.

The Go relay's flags (``influxdb-relay -config PATH -v``, ``-version``) work
too, so that an existing unit file or init script keeps working.
"""

import signal
import sys
import time

import click

from . import __version__, config as config_mod, logs
from .errors import ConfigError, RelayError

CONFIG_ENV = "INFLUX_RELAY_CONFIG"

_config_option = click.option(
    "--config",
    "-c",
    "config_path",
    envvar=CONFIG_ENV,
    required=True,
    metavar="PATH",
    help="The relay's TOML config (or $%s); packaged: /etc/influxdb-relay/influxdb-relay.conf."
    % CONFIG_ENV,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="influx-relay")
def cli():
    """influx-relay: copies every InfluxDB write to every backend."""


@cli.command()
@_config_option
@click.option("--verbose", "-v", is_flag=True, help="Log every request.")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="text", show_default=True,
              help="Log lines on stderr as text or as one JSON object each.")
def run(config_path, verbose, log_format):
    """Run the relay in the foreground until SIGTERM or SIGINT; SIGHUP reloads the config."""
    cfg = _load(config_path)
    from . import service, supervisor  # after monkey-patching: see main()

    worker = supervisor.Worker.from_env()
    if worker is not None:
        # A reload asked while this worker starts is no reason to die: it is
        # reading the file anyway. (Its own handler replaces this once it runs.)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logs.setup(verbose, log_format, worker=worker.index if worker is not None else None)
    try:
        if worker is None and cfg.workers > 1:
            status = supervisor.run(cfg, supervisor.worker_args(config_path, verbose, log_format))
        else:
            status = service.run(cfg, worker)
    except RelayError as e:
        click.echo("influx-relay: %s" % e, err=True)
        sys.exit(1)
    sys.exit(status)


@cli.command()
@_config_option
@click.option("--quiet", "-q", is_flag=True,
              help="Print nothing when the config is valid (errors still go to stderr).")
def check(config_path, quiet):
    """Validate the config and print what it would start."""
    cfg = _load(config_path)
    if quiet:
        return
    click.echo("%s: OK" % config_path)
    for listener in cfg.http:
        scheme = "https" if listener.ssl_combined_pem else "http"
        click.echo("http listener %r on %s (%s)" % (listener.name, listener.bind_addr, scheme))
        for o in listener.outputs:
            write = o.endpoints.write_v2 if o.api == "v2" else o.endpoints.write
            click.echo(
                "  -> %s: %s%s (timeout %gs)" % (o.name, o.base_url, write, o.timeout)
            )
            for f in o.filters:
                click.echo("       filter %r: %s" % (f.name, _describe_filter(f)))
    for listener in cfg.udp:
        click.echo(
            "udp listener %r on %s (precision %s)"
            % (listener.name, listener.bind_addr, listener.precision)
        )
        for o in listener.outputs:
            click.echo("  -> %s: %s (mtu %d)" % (o.name, o.location, o.mtu))


_listener_option = click.option(
    "--listener", "-l", metavar="NAME",
    help="The [[http]] listener to ask (default: the config's first).")


def _client(config_path, listener):
    from . import control

    cfg = _load(config_path)
    try:
        return control.RelayClient(cfg, listener)
    except RelayError as e:
        click.echo("influx-relay: %s" % e, err=True)
        sys.exit(2)


def _ask(call):
    """``call()``, or the one line of what went wrong, exit status 1."""
    try:
        return call()
    except RelayError as e:
        click.echo("influx-relay: %s" % e, err=True)
        sys.exit(1)


@cli.command()
@_config_option
@_listener_option
@click.option("--watch", "-w", "watch", type=float, default=None, is_flag=False,
              flag_value=2.0, metavar="[SECONDS]",
              help="Refresh every SECONDS (2 if not given) until Ctrl-C.")
def status(config_path, listener, watch):
    """The running relay's outputs: state, backlog, drops, gaps, replay."""
    from . import control

    client = _client(config_path, listener)
    while True:
        body = _ask(lambda: client.get_json("/status"))
        text = control.status_lines(body)
        if watch is None:
            click.echo(text)
            return
        click.clear()
        click.echo("%s   (every %gs, Ctrl-C to stop)\n%s" % (client.url, watch, text))
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return


@cli.command()
@_config_option
@_listener_option
def gaps(config_path, listener):
    """What each output misses of what the others stored (the gap ledger)."""
    from . import control

    client = _client(config_path, listener)
    click.echo(control.gaps_lines(_ask(lambda: client.get_json("/status"))))


@cli.command()
@_config_option
@_listener_option
@click.option("--output", "-o", "outputs", multiple=True, metavar="NAME",
              help="Repair only this output (may be given again; default: every output).")
@click.option("--dry-run", is_flag=True, help="Show what would be copied from where, copy nothing.")
def repair(config_path, listener, outputs, dry_run):
    """Copy back what outputs miss (the gap ledger) from complete peers, and wait.

    Asks the running relay (its admin endpoint: the listener needs admin-enabled),
    shows the progress, and exits 0 once those outputs miss nothing, 1 naming
    what could not be repaired.
    """
    from urllib.parse import urlencode

    from . import control

    client = _client(config_path, listener)
    if not client.listener.admin_enabled:
        click.echo("influx-relay: repair asks the relay's /admin/repair, and listener %r of %s "
                   "does not serve it: set admin-enabled = true (and admin-token) there"
                   % (client.listener.name, config_path), err=True)
        sys.exit(2)
    query = urlencode([("output", o) for o in outputs] + ([("dry_run", "true")] if dry_run else []))
    status, body = _ask(lambda: client.request("POST", "/admin/repair?" + query, admin=True))
    if status not in (200, 202):
        click.echo("influx-relay: %s answered %d: %s" % (client.where, status, control._error(body)),
                   err=True)
        sys.exit(1)
    if dry_run:
        click.echo(control.plan_lines(body["plan"]))
        return
    tty = sys.stdout.isatty()
    last = 0.0
    while True:
        job = body["repair"]
        now = time.monotonic()
        if tty:
            click.echo("\r%s %s  " % (control.progress_bar(job), control.repair_line(job)), nl=False)
        elif now - last >= 5 or job["state"] != "running":
            click.echo("%s %s" % (control.progress_bar(job), control.repair_line(job)))
            last = now
        if job["state"] != "running":
            break
        time.sleep(0.5)
        body = _ask(lambda: client.get_json("/admin/repair", admin=True))
    if tty:
        click.echo("")
    left = _ask(lambda: client.get_json("/status"))["outputs"]
    wanted = set(outputs) or set(left)
    missing = {name: o["gaps"]["points"] for name, o in left.items()
               if name in wanted and o.get("gaps", {}).get("points")}
    if not missing:
        click.echo("repaired: %s miss nothing the others hold" % ", ".join(sorted(wanted)))
        return
    for task in job.get("tasks", []):
        if task["state"] != "done":
            click.echo("not repaired: %s %s/%s %s to %s: %s" % (
                task["output"], task["db"] or "(unknown)", task["rp"] or "(default)",
                control.when(task["start"]), control.when(task["end"]), task.get("reason", "")),
                err=True)
    click.echo("influx-relay: still missing: %s" % ", ".join(
        "%s %d point(s)" % kv for kv in sorted(missing.items())), err=True)
    sys.exit(1)


def _describe_filter(f):
    """What a [[filter]] lets through, as the config says it."""
    parts = []
    if f.measurement_expression is not None:
        parts.append("measurement =~ /%s/" % f.measurement_expression.pattern)
    if f.tag_expression is not None:
        parts.append("tag keys =~ /%s/" % f.tag_expression.pattern)
    return " and ".join(parts) or "every point"


def _load(path):
    try:
        return config_mod.load(path)
    except ConfigError as e:
        click.echo("influx-relay: %s" % e, err=True)
        sys.exit(2)


def translate_go_flags(args):
    """Turn the Go relay's ``-config PATH -v`` / ``-version`` into our commands."""
    if not args or not args[0].startswith("-") or args[0].startswith("--"):
        return args
    if args[0] in ("-h", "-V"):
        return args
    out = ["run"]
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.lstrip("-").partition("=")
        if name == "version":
            return ["--version"]
        if name == "config":
            out += ["--config", value if eq else (rest.pop(0) if rest else "")]
        elif name == "v":
            out.append("--verbose")
        else:
            out.append(arg)
    return out


def main(args=None):
    # Every socket the relay opens is a gevent socket, urllib3's included.
    from gevent import monkey

    monkey.patch_all()
    if args is None:
        args = sys.argv[1:]
    return cli.main(args=translate_go_flags(list(args)), prog_name="influx-relay")

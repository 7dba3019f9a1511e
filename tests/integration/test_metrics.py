"""GET /metrics: scraped after known traffic, parsed with prometheus_client's parser."""

import socket

import gevent
from prometheus_client.parser import text_string_to_metric_families

from .conftest import buffered, eventually, http_config, point, udp_config


def scrape(r):
    """{(sample name, sorted label pairs): value} of the relay's /metrics."""
    resp = r.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.data.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_counts_match_the_traffic_sent(relay, backends):
    a, b = backends(), backends(mode=("status", 400, b'{"error":"bad"}'))
    r = relay(http_config(a, b))
    body = b"cpu v=1 1\ncpu v=2 2\ncpu v=3\n"
    for _ in range(5):
        assert r.write(body).status in (204, 400)
    assert r.write(b"cpu", query="db=x").status == 400  # not line protocol: no points
    assert r.write(b"", query="").status == 400          # no db
    assert r.get("/ping").status == 204
    assert r.get("/nope").status == 404
    assert r.get("/nope2").status == 404
    eventually(lambda: len(a.requests) == 5 and len(b.requests) == 5)
    gevent.sleep(0.05)  # let the slower send of the last write settle
    m = scrape(r)

    writes = sum(value(m, "influx_relay_http_requests_total", listener="test", path="/write",
                       status=s) or 0 for s in ("204", "400"))
    assert writes == 7
    assert value(m, "influx_relay_http_requests_total",
                 listener="test", path="/ping", status="204") == 1
    assert value(m, "influx_relay_http_requests_total",
                 listener="test", path="other", status="404") == 2
    assert value(m, "influx_relay_http_points_received_total", listener="test") == 15
    stamped_len = len(body) - 1 + 20  # the third line gets " <19-digit stamp>", no final "\n"
    assert value(m, "influx_relay_http_bytes_received_total", listener="test") == 5 * stamped_len

    def writes_of(output, result):
        return value(m, "influx_relay_output_writes_total", listener="test", output=output,
                     result=result)

    assert [writes_of("b0", r) for r in ("ok", "rejected", "failed", "buffered")] == [5, 0, 0, 0]
    assert [writes_of("b1", r) for r in ("ok", "rejected", "failed", "buffered")] == [0, 5, 0, 0]
    assert value(m, "influx_relay_output_write_duration_seconds_count",
                 listener="test", output="b0") == 5
    assert value(m, "influx_relay_output_write_duration_seconds_bucket",
                 listener="test", output="b0", le="+Inf") == 5
    assert value(m, "influx_relay_output_write_duration_seconds_sum",
                 listener="test", output="b0") > 0
    assert value(m, "influx_relay_backend_up", listener="test", output="b0") == 1
    assert value(m, "influx_relay_backend_up", listener="test", output="b1") == 1  # 4xx: up
    # The scrape itself is counted by the next one.
    m2 = scrape(r)
    assert value(m2, "influx_relay_http_requests_total",
                 listener="test", path="/metrics", status="200") == 1
    assert value(m2, "influx_relay_info", version=__import__("influx_relay").__version__) == 1


def test_buffer_gauges_during_an_outage_and_after(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b))
    for i in range(10):
        assert r.write(point(i)).status == 204
    gevent.sleep(0.2)
    m = scrape(r)
    key = dict(listener="test", output="b1")
    assert value(m, "influx_relay_backend_up", **key) == 0
    assert value(m, "influx_relay_backend_up", listener="test", output="b0") == 1
    assert value(m, "influx_relay_output_buffer_backlog", **key) == 1
    assert value(m, "influx_relay_output_buffer_writes", **key) == 10
    assert value(m, "influx_relay_output_buffer_bytes", **key) == sum(len(point(i)) for i in range(10))
    assert value(m, "influx_relay_output_buffer_limit_bytes", **key) == 1024 * 1024
    assert value(m, "influx_relay_output_buffer_oldest_age_seconds", **key) > 0.1
    # The first write failed direct and was buffered; the 9 after it queued behind it.
    assert value(m, "influx_relay_output_writes_total", result="failed", **key) == 1
    assert value(m, "influx_relay_output_writes_total", result="buffered", **key) == 10
    assert value(m, "influx_relay_output_retries_total", result="failed", **key) >= 1
    assert value(m, "influx_relay_output_buffer_writes", listener="test", output="b0") == 0

    b.start()
    eventually(lambda: len(b.lines) == 10, timeout=10)
    m = eventually(lambda: (lambda m: m if value(m, "influx_relay_output_buffer_writes", **key) == 0
                            else None)(scrape(r)))
    assert value(m, "influx_relay_backend_up", **key) == 1
    assert value(m, "influx_relay_output_buffer_backlog", **key) == 0
    assert value(m, "influx_relay_output_retries_total", result="ok", **key) >= 1
    assert value(m, "influx_relay_output_dropped_writes_total", reason="full", **key) == 0


def test_drops_are_counted_by_reason(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b, listener_extra="admin-enabled = true"))
    big = b"\n".join(point(i) for i in range(20000))  # ~ 500 kB a write, 1 MB buffer
    for _ in range(3):
        assert r.write(big).status == 204
    assert r.http.request("POST", r.url + "/admin/flush").status == 200
    m = scrape(r)
    key = dict(listener="test", output="b1")
    assert value(m, "influx_relay_output_dropped_writes_total", reason="full", **key) == 1
    assert value(m, "influx_relay_output_dropped_writes_total", reason="flushed", **key) == 2
    assert value(m, "influx_relay_output_dropped_writes_total", reason="expired", **key) == 0


def test_udp_packets_in_out_and_dropped(relay, udp_sinks):
    a = udp_sinks()
    r = relay(udp_config(a, mtu=64))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"cpu v=1 1", r.udp_address)
    s.sendto(b"cpu,host=" + b"x" * 100 + b" v=1 1", r.udp_address)  # longer than the mtu
    s.sendto(b"not line protocol", r.udp_address)
    s.close()
    eventually(lambda: r.relay.udp[0].received == 3)
    # A UDP-only relay has no /metrics to scrape: read the registry directly.
    from prometheus_client import generate_latest

    text = generate_latest(r.relay.metrics.registry).decode()
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for f in text_string_to_metric_families(text) for s in f.samples}
    assert value(m, "influx_relay_udp_packets_received_total", listener="u") == 3
    assert value(m, "influx_relay_udp_packets_malformed_total", listener="u") == 1
    assert value(m, "influx_relay_udp_packets_sent_total", listener="u", output="s0") == 1
    assert value(m, "influx_relay_udp_dropped_total", listener="u", output="s0") == 1


def test_a_broken_collector_never_breaks_writes(relay, backends):
    a = backends()
    r = relay(http_config(a))
    output = r.relay.http[0].app.fanout.outputs[0]

    def broken():
        raise RuntimeError("boom")

    output.status = broken
    assert r.write(b"cpu v=1 1").status == 204
    resp = r.get("/metrics")
    assert resp.status == 200  # what could be collected is there
    assert b"influx_relay_http_requests_total" in resp.data
    assert r.write(b"cpu v=2 2").status == 204
    assert r.http.request("POST", r.url + "/metrics").status == 405


def test_greenlets_are_counted_and_come_back_to_their_level(relay, backends):
    a, b = backends(), backends(mode="hang")
    r = relay(http_config(a, b))
    before = value(scrape(r), "influx_relay_greenlets")
    assert before >= 2  # at least the hub and the main greenlet
    for i in range(20):  # each leaves a request to b hanging, for its 2s timeout
        assert r.write(point(i)).status == 204

    # This process is also the fake backend: its handlers of b's hung requests
    # sleep on, and are not the relay's.
    def relay_greenlets():
        return value(scrape(r), "influx_relay_greenlets") - len(b._conns)

    assert relay_greenlets() >= before + 20  # the sends to b, waiting
    # Once b's requests time out, their greenlets are gone.
    eventually(lambda: relay_greenlets() <= before + 2, timeout=5)
    assert relay_greenlets() <= before + 2

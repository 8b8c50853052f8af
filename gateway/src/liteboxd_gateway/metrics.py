"""Prometheus metrics in the text exposition format, served on their own port.

Labels are low-cardinality on purpose: route form, status code, reason. The sandbox id is never a
label (one series per sandbox would grow without bound, and ids are not for a metrics store).
"""
import bisect

from aiohttp import web

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _labels(names, values) -> str:
    if not names:
        return ""
    escaped = (str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped)) + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels=()):
        self.name, self.help, self.label_names = name, help_text, tuple(labels)

    def header(self):
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name, help_text, labels=()):
        super().__init__(name, help_text, labels)
        self.values = {}

    def inc(self, *labels, amount=1):
        self.values[labels] = self.values.get(labels, 0) + amount

    def lines(self):
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {v}" for k, v in self.values.items()]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name, help_text, labels=(), read=None):
        super().__init__(name, help_text, labels)
        self.values = {}
        self.read = read

    def set(self, value, *labels):
        self.values[labels] = value

    def add(self, amount, *labels):
        self.values[labels] = self.values.get(labels, 0) + amount

    def lines(self):
        if self.read is not None:
            self.values[()] = self.read()
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {v}" for k, v in self.values.items()]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, help_text, labels=(), buckets=LATENCY_BUCKETS):
        super().__init__(name, help_text, labels)
        self.buckets = tuple(buckets)
        self.series = {}  # labels -> [per-bucket counts (+Inf last), sum]

    def observe(self, value, *labels):
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [[0] * (len(self.buckets) + 1), 0.0]
        series[0][bisect.bisect_left(self.buckets, value)] += 1
        series[1] += value

    def lines(self):
        out = self.header()
        names = self.label_names + ("le",)
        for labels, (counts, total) in self.series.items():
            running = 0
            for bound, count in zip(self.buckets + ("+Inf",), counts):
                running += count
                out.append(f"{self.name}_bucket{_labels(names, labels + (bound,))} {running}")
            out.append(f"{self.name}_sum{_labels(self.label_names, labels)} {total}")
            out.append(f"{self.name}_count{_labels(self.label_names, labels)} {running}")
        return out


class GatewayMetrics:
    """Every metric the gateway exports."""

    def __init__(self):
        self.requests = Counter("liteboxd_gateway_requests_total",
                                "Requests answered, by route form and status code.", ("form", "code"))
        self.duration = Histogram("liteboxd_gateway_request_duration_seconds",
                                  "Time to the end of the response (WebSockets excluded), by route form.",
                                  ("form",))
        self.active_requests = Gauge("liteboxd_gateway_active_requests", "HTTP requests being proxied.")
        self.active_websockets = Gauge("liteboxd_gateway_active_websockets", "WebSocket sessions being relayed.")
        self.websockets = Counter("liteboxd_gateway_websocket_sessions_total",
                                  "WebSocket sessions ended, by close reason.", ("reason",))
        self.rejected = Counter("liteboxd_gateway_rejected_total",
                                "Requests refused before reaching a sandbox, by reason.", ("reason",))
        self.upstream_errors = Counter("liteboxd_gateway_upstream_errors_total",
                                       "Failures talking to a sandbox, by kind.", ("kind",))
        self.connect_retries = Counter("liteboxd_gateway_upstream_connect_retries_total",
                                       "Upstream connects retried after a connect failure.")
        self.cache_sandboxes = Gauge("liteboxd_gateway_cache_sandboxes", "Sandbox Pods in the watch cache.")
        self.cache_synced = Gauge("liteboxd_gateway_cache_synced", "1 once the Pod cache has listed, else 0.")
        self.watch_events = Counter("liteboxd_gateway_watch_events_total", "Pod watch events applied, by type.",
                                    ("type",))
        self.watch_restarts = Counter("liteboxd_gateway_watch_restarts_total",
                                      "Pod list/watch restarts, by reason.", ("reason",))
        self.cache_synced.set(0)
        self.active_requests.set(0)
        self.active_websockets.set(0)

    def all(self):
        return [value for value in vars(self).values() if isinstance(value, _Metric)]

    def render(self) -> str:
        lines = []
        for metric in self.all():
            lines.extend(metric.lines())
        return "\n".join(lines) + "\n"


def metrics_app(metrics: GatewayMetrics) -> web.Application:
    async def handle(_request):
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app

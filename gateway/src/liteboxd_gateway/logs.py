"""JSON logging that never blocks the event loop.

Records go through a queue to a thread that writes them to stderr, so a slow terminal or a full
pipe to journald stalls that thread, never a request. Access log lines are JSON objects with a
request id; they carry no token (the query string logged is the one forwarded, carriers removed).
"""
import datetime
import json
import logging
import logging.handlers
import queue
import sys

ACCESS_LOGGER = "liteboxd_gateway.access"


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        entry["message"] = record.getMessage()
        # Structured fields travel as ``extra={"fields": {...}}``: QueueHandler turns msg into text.
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


def setup(level: str = "info", stream=None):
    """Route every log record through a queue to one writer thread; returns it (stop it to flush)."""
    records = queue.SimpleQueue()
    writer = logging.StreamHandler(stream or sys.stderr)
    writer.setFormatter(JsonFormatter())
    listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(records))
    root.setLevel(level.upper())
    # aiohttp logs every broken client connection at error level; that is the client's problem.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    listener.start()
    return listener


access_log = logging.getLogger(ACCESS_LOGGER)

"""JSON logs without CPython's internals: the same lines where the C encoder is missing, and
access records timed from what logging's own records report."""
import json
import logging

from liteboxd_gateway import logs


def formatted(formatter):
    plain = logging.LogRecord("liteboxd_gateway.server", logging.WARNING, __file__, 1, "started %s", ("☃",), None)
    plain.fields = {"addresses": [["127.0.0.1", 8080]], "loop": "uvloop", "quote": 'a"b\\c', "ratio": 0.1,
                    "path": logs.AccessLine, "none": None}
    try:
        raise ValueError("broken")
    except ValueError as exc:
        failed = logging.LogRecord("liteboxd_gateway.app", logging.ERROR, __file__, 2, "failed", None,
                                   (type(exc), exc, exc.__traceback__))
    access = logs.AccessRecord(("id-1", "::1", "GET", "path", "sb-1", "/é?q=\"1\"", 200, 0.5, 10, None))
    return [formatter.format(record) for record in (plain, failed, access)]


def test_without_the_c_encoder_records_are_the_same_json(monkeypatch):
    with_c_encoder = formatted(logs.JsonFormatter())
    # What json.encoder holds on a Python built without its _json accelerator.
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    without = formatted(logs.JsonFormatter())
    # The time is the only field that differs between two runs.
    strip = [{k: v for k, v in json.loads(line).items() if k != "time"} for line in with_c_encoder]
    assert [{k: v for k, v in json.loads(line).items() if k != "time"} for line in without] == strip
    assert all(line.isascii() for line in without)
    assert json.loads(without[0])["path"] == str(logs.AccessLine)  # what json cannot encode goes in as str()
    assert "ValueError: broken" in json.loads(without[1])["error"]


def test_access_records_are_timed_like_logging_records(monkeypatch):
    # AccessRecord copies a LogRecord's fields instead of calling its constructor; its time since
    # logging started comes from what a LogRecord reports, not from logging's private start time.
    monkeypatch.setattr(logs.AccessRecord, "template", None)
    before = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    access = logs.AccessRecord(("id-2", None, "GET", "invalid", None, None, 400, 1.0, 0, "bad"))
    after = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert before.relativeCreated - 1 <= access.relativeCreated <= after.relativeCreated + 1
    assert before.created <= access.created <= after.created

"""Large JSON documents are parsed with the cyclic collector paused, and it comes back."""

from __future__ import annotations

import gc
import io
import json
import threading

import pytest

from defer_orchestration.lib import json_documents


def test_loads_parses_like_json_and_restores_the_collector() -> None:
    document = {"nodes": {f"model.p.m{i}": {"depends_on": [i, str(i)]} for i in range(100)}}
    text = json.dumps(document)
    assert gc.isenabled()
    assert json_documents.loads(text) == document
    assert json_documents.loads(text.encode()) == document
    assert json_documents.load(io.StringIO(text)) == document
    assert gc.isenabled()


def test_the_collector_is_off_inside_and_back_after_an_error() -> None:
    with json_documents.collector_paused():
        assert not gc.isenabled()
        with json_documents.collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled(), "an inner pause ending must not turn the collector back on"
    assert gc.isenabled()
    with pytest.raises(json.JSONDecodeError):
        json_documents.loads('{"cut": ')
    assert gc.isenabled()


def test_a_collector_switched_off_by_the_caller_stays_off() -> None:
    gc.disable()
    try:
        json_documents.loads("{}")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_pauses_in_threads_end_with_the_collector_on() -> None:
    inside = threading.Barrier(2)
    release = threading.Event()

    def hold() -> None:
        with json_documents.collector_paused():
            inside.wait()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    with json_documents.collector_paused():
        inside.wait()
    assert not gc.isenabled(), "the other thread still parses"
    release.set()
    worker.join()
    assert gc.isenabled()

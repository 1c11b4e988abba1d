"""Durability of the SQLite store across a clean restart and across `kill -9` in the middle of a burst.

A write answered with 200 must survive both; nothing may be corrupted. Each test runs its own
server subprocesses on a data directory it keeps between them.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

THREADS = 16


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def snapshot(kv: Any, prefix: str) -> dict[str, Any]:
    """Everything a client can see about the channels and streams whose names start with `prefix`."""
    condition = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": prefix}
    channels = []
    for page in kv.get_paginator("list_signaling_channels").paginate(ChannelNameCondition=condition):
        channels.extend(page["ChannelInfoList"])
    state: dict[str, Any] = {"order": [c["ChannelName"] for c in channels], "channels": {}, "streams": {}}
    for c in channels:
        arn = c["ChannelARN"]
        state["channels"][c["ChannelName"]] = {
            "info": kv.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"],
            "tags": kv.list_tags_for_resource(ResourceARN=arn)["Tags"],
            "storage": kv.describe_media_storage_configuration(ChannelARN=arn)["MediaStorageConfiguration"],
        }
    for s in kv.list_streams(StreamNameCondition=condition)["StreamInfoList"]:
        state["streams"][s["StreamName"]] = {
            "info": s,
            "tags": kv.list_tags_for_stream(StreamARN=s["StreamARN"])["Tags"],
        }
    return state


def sigterm(running: Any) -> int:
    running.process.send_signal(signal.SIGTERM)
    code = int(running.process.wait(30))
    running.stop()
    return code


def test_restart_keeps_everything(tmp_path: Path, start_server: Any, make_kv: Any, names: Any) -> None:
    data = tmp_path / "data"
    first = start_server(data_dir=data, extra_args=["--limits", "off"])
    kv = make_kv(first.endpoint_url)

    arns = [kv.create_signaling_channel(ChannelName=names(f"c{i}"))["ChannelARN"] for i in range(8)]
    kv.create_signaling_channel(
        ChannelName=names("tagged"), SingleMasterConfiguration={"MessageTtlSeconds": 17},
        Tags=[{"Key": "étiquette", "Value": "valeur"}, {"Key": "team", "Value": "video"}],
    )  # fmt: skip
    version = kv.describe_signaling_channel(ChannelARN=arns[1])["ChannelInfo"]["Version"]
    kv.update_signaling_channel(
        ChannelARN=arns[1], CurrentVersion=version, SingleMasterConfiguration={"MessageTtlSeconds": 99}
    )
    kv.delete_signaling_channel(ChannelARN=arns[2])
    kv.tag_resource(ResourceARN=arns[3], Tags=[{"Key": "k", "Value": "v"}])
    stream = kv.create_stream(StreamName=names("stream"), DataRetentionInHours=24, MediaType="video/h264",
                              Tags={"s": "1"})["StreamARN"]  # fmt: skip
    kv.update_media_storage_configuration(
        ChannelARN=arns[4], MediaStorageConfiguration={"StreamARN": stream, "Status": "ENABLED"}
    )
    before = snapshot(kv, names.prefix)
    assert len(before["channels"]) == 8 and len(before["streams"]) == 1
    assert before["channels"][names("c1")]["info"]["SingleMasterConfiguration"]["MessageTtlSeconds"] == 99

    assert sigterm(first) == 0, first.drain.text()

    second = start_server(data_dir=data, extra_args=["--limits", "off"])
    kv = make_kv(second.endpoint_url)
    after = snapshot(kv, names.prefix)
    assert after == before
    with pytest.raises(kv.exceptions.ResourceNotFoundException):
        kv.describe_signaling_channel(ChannelARN=arns[2])
    (mapped,) = kv.describe_mapped_resource_configuration(StreamARN=stream)["MappedResourceConfigurationList"]
    assert mapped["ARN"] == arns[4]
    # Versions still guard updates after the restart.
    with pytest.raises(kv.exceptions.VersionMismatchException):
        kv.update_signaling_channel(ChannelARN=arns[1], CurrentVersion=version)
    with pytest.raises(kv.exceptions.ResourceInUseException):
        kv.create_signaling_channel(ChannelName=names("c0"))

    assert sigterm(second) == 0, second.drain.text()
    assert integrity(data / "signalite.db") == "ok"


class Burst:
    """THREADS clients creating channels as fast as they can, recording which creates were answered 200."""

    def __init__(self, kv_factory: Any, endpoint_url: str, prefix: str, round_no: int, counter_arn: str) -> None:
        self.acked: dict[str, str] = {}  # name -> ARN, answered 200
        self.unknown: set[str] = set()  # sent, no answer (the server died)
        self.refused: list[str] = []  # answered with an error: must not happen here
        self.counter_acked = -1  # the last TagResource value answered 200
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.clients = [kv_factory(endpoint_url) for _ in range(THREADS + 1)]
        self.prefix = prefix
        self.round_no = round_no
        self.counter_arn = counter_arn
        self.threads = [threading.Thread(target=self.creator, args=(i,), daemon=True) for i in range(THREADS)]
        self.threads.append(threading.Thread(target=self.tagger, daemon=True))

    def creator(self, worker: int) -> None:
        kv = self.clients[worker]
        i = 0
        while not self.stop.is_set():
            name = f"{self.prefix}-r{self.round_no}-w{worker:02d}-{i:05d}"
            i += 1
            try:
                arn = kv.create_signaling_channel(ChannelName=name)["ChannelARN"]
            except kv.exceptions.ClientError as e:
                with self.lock:
                    self.refused.append(f"{name}: {e}")
                continue
            except Exception:  # connection refused/reset: the server is gone
                with self.lock:
                    self.unknown.add(name)
                return
            with self.lock:
                self.acked[name] = arn

    def tagger(self) -> None:
        kv = self.clients[THREADS]
        i = self.counter_acked + 1
        while not self.stop.is_set():
            try:
                kv.tag_resource(ResourceARN=self.counter_arn, Tags=[{"Key": "counter", "Value": f"{i:08d}"}])
            except Exception:
                return
            self.counter_acked = i
            i += 1

    def run_until_killed(self, process: Any, min_acked: int, max_seconds: float) -> None:
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.acked) >= min_acked:
                    break
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)  # mid-burst: every thread has a request in flight or about to
        process.wait(10)
        self.stop.set()
        for t in self.threads:
            t.join(30)


def test_kill_9_mid_burst_loses_no_acknowledged_write(
    tmp_path: Path, start_server: Any, make_kv: Any, names: Any
) -> None:
    data = tmp_path / "data"
    db = data / "signalite.db"
    running = start_server(data_dir=data, extra_args=["--limits", "off"])
    kv = make_kv(running.endpoint_url)
    counter_arn = kv.create_signaling_channel(ChannelName=names("counter"))["ChannelARN"]
    acked: dict[str, str] = {}
    unknown: set[str] = set()
    last_counter = -1

    for round_no in range(2):
        burst = Burst(make_kv, running.endpoint_url, names.prefix, round_no, counter_arn)
        burst.counter_acked = last_counter
        burst.run_until_killed(running.process, min_acked=120, max_seconds=20)
        assert running.process.returncode == -signal.SIGKILL
        assert not burst.refused, burst.refused[:5]
        assert len(burst.acked) >= 16, "the burst hardly ran before the kill"
        acked.update(burst.acked)
        last_counter = burst.counter_acked
        running.stop()

        running = start_server(data_dir=data, extra_args=["--limits", "off"])
        kv = make_kv(running.endpoint_url)
        assert integrity(db) == "ok"

        # Every create that was answered 200 is there, with the ARN it was answered with.
        missing = []
        for name, arn in acked.items():
            try:
                info = kv.describe_signaling_channel(ChannelName=name)["ChannelInfo"]
            except kv.exceptions.ResourceNotFoundException:
                missing.append(name)
                continue
            assert info["ChannelARN"] == arn and info["ChannelStatus"] == "ACTIVE"
        assert not missing, f"{len(missing)} acknowledged creates lost after kill -9: {missing[:5]}"

        # The list is whole and consistent: acknowledged ones plus at most the in-flight ones.
        condition = {"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": f"{names.prefix}-r"}
        listed = {}
        for page in kv.get_paginator("list_signaling_channels").paginate(
            ChannelNameCondition=condition, PaginationConfig={"PageSize": 100}
        ):
            for c in page["ChannelInfoList"]:
                listed[c["ChannelName"]] = c["ChannelARN"]
        assert set(acked) <= set(listed)
        unknown |= burst.unknown
        extra = set(listed) - set(acked)
        assert extra <= unknown, sorted(extra - unknown)[:5]

        # The last acknowledged tag write survived (the one in flight may have landed too).
        tags = kv.list_tags_for_resource(ResourceARN=counter_arn)["Tags"]
        if last_counter >= 0:
            assert int(tags["counter"]) in (last_counter, last_counter + 1), (tags, last_counter)
            last_counter = int(tags["counter"])

    # Still writable, and names are still unique.
    kv.create_signaling_channel(ChannelName=names("after"))
    with pytest.raises(kv.exceptions.ResourceInUseException):
        kv.create_signaling_channel(ChannelName=next(iter(acked)))
    assert sigterm(running) == 0
    assert integrity(db) == "ok"

"""Weir's Kafka backend against a client no one here wrote: confluent-kafka
(librdkafka) for Python. Usage:

    python kafka_interop.py kafka://host:port path/to/weir

Three checks, each on topics of its own (named after this process and the
time, since the broker is shared and may be in-memory):

1. Weir -> Kafka: `weir queue publish` with a key and headers; a plain
   Consumer must read the exact payload bytes, key and headers.
2. Kafka -> Weir: a plain Producer writes keyed messages with headers to a
   topic made with AdminClient; `weir queue consume` must print each one
   (payload, key, headers, id = PARTITION-OFFSET, timestamp) and commit
   its offsets under the Kafka group `G:T`.
3. Dead letters: a message Weir gives up on lands in `T.dlq` with the
   origin headers, readable by a plain Consumer.

Prints one line per check; exits 1 at the first mismatch, saying what
differed. Every wait is bounded.

Broker quirks worked around here, not in Weir (tansu 0.6): a produced
batch of several records advances the high watermark by one, so every
producer sends one record per batch (`batch.num.messages=1`).
"""

import base64
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

# Each weir command must finish within this; each Kafka wait likewise.
COMMAND_TIMEOUT = 60
WAIT = 30
PARTITIONS = 4
ONE_PER_BATCH = ["--kafka-option", "batch.num.messages=1"]


def fail(what):
    print(f"kafka-interop: FAIL: {what}", file=sys.stderr)
    sys.exit(1)


def ok(what):
    print(f"ok  {what}", flush=True)


def expect(got, want, what):
    if got != want:
        fail(f"{what}: expected {want!r}, got {got!r}")


def weir(binary, args, stdin=None):
    """Runs weir; returns its stdout; fails on a non-zero exit or a hang."""
    try:
        done = subprocess.run(
            [binary, *args],
            input=stdin,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        fail(f"weir {' '.join(args)} ran past {COMMAND_TIMEOUT}s")
    if done.returncode != 0:
        fail(
            f"weir {' '.join(args)} exited {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout


def read_all(servers, topic, want, group):
    """Reads `want` messages from `topic` as a new member of `group`
    starting at the earliest offset; fails after WAIT seconds."""
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + WAIT
        while len(got) < want and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            if m.error():
                fail(f"consuming {topic}: {m.error()}")
            got.append(m)
    finally:
        consumer.close()
    if len(got) != want:
        fail(f"read {len(got)} of {want} messages from {topic} in {WAIT}s")
    return got


def weir_to_kafka(servers, bus, binary, topic, started_ms):
    """Weir publishes; a plain Consumer reads."""
    headers = [("source", "weir"), ("trace-id", "abc-123")]
    header_args = [a for n, v in headers for a in ("--header", f"{n}={v}")]
    as_args = [
        b'{"job":"render","frame":42,"tags":["a","b"]}',
        b"a plain text line, with unicode: caf\xc3\xa9",
    ]
    weir(
        binary,
        ["queue", "publish", topic, "--bus", bus, *ONE_PER_BATCH, "--key", "k-args",
         *header_args, *(p.decode() for p in as_args)],
    )
    # One message per stdin line, under another key.
    from_stdin = [b"line one", b'{"n":2}', b"line three"]
    weir(
        binary,
        ["queue", "publish", topic, "--bus", bus, *ONE_PER_BATCH, "--key", "k-stdin",
         *header_args],
        stdin=b"\n".join(from_stdin) + b"\n",
    )
    want = [(b"k-args", p) for p in as_args] + [(b"k-stdin", p) for p in from_stdin]
    got = read_all(servers, topic, len(want), f"py-interop-{os.getpid()}")
    ok(f"weir -> kafka: a plain Consumer read {len(got)} messages from {topic}")

    # One key, one partition, in order: compare per key, in offset order.
    got.sort(key=lambda m: (m.partition(), m.offset()))
    for key in (b"k-args", b"k-stdin"):
        mine = [m for m in got if m.key() == key]
        expect([m.value() for m in mine], [p for k, p in want if k == key],
               f"payloads under key {key!r}, in order")
        expect(len({m.partition() for m in mine}), 1, f"partitions of key {key!r}")
    ok("weir -> kafka: payload bytes exact (JSON, UTF-8 text, stdin lines), per key in order")

    want_headers = [(n, v.encode()) for n, v in headers]
    now_ms = int(time.time() * 1000)
    for m in got:
        expect(m.headers(), want_headers, f"headers of {m.topic()}/{m.partition()}@{m.offset()}")
        kind, ts = m.timestamp()
        # librdkafka: 1 = CreateTime, the time Weir stamped it.
        expect(kind, 1, "timestamp type (1 = CreateTime)")
        if not started_ms - 1000 <= ts <= now_ms + 1000:
            fail(f"timestamp {ts} is outside this run ({started_ms}..{now_ms})")
    ok("weir -> kafka: keys and headers exact; CreateTime timestamps within the run")


def kafka_to_weir(servers, bus, binary, topic, n):
    """A plain Producer writes; `weir queue consume` reads."""
    admin = AdminClient({"bootstrap.servers": servers})
    future = admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
        request_timeout=WAIT,
    )[topic]
    try:
        future.result(timeout=WAIT)
    except KafkaException as e:
        fail(f"creating {topic}: {e}")
    ok(f"kafka -> weir: AdminClient created {topic} ({PARTITIONS} partitions)")

    # Text, one JSON object and one binary payload (Weir prints it base64).
    payloads = [f"message {i} from python".encode() for i in range(n)]
    payloads[1] = json.dumps({"i": 1, "from": "python"}, separators=(",", ":")).encode()
    payloads[2] = bytes([0, 1, 0xFE, 0xFF, 0x80]) + b"binary"
    sent = {}  # key -> (partition, offset, timestamp ms)
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            sent[msg.key().decode()] = (msg.partition(), msg.offset(), msg.timestamp()[1])

    producer = Producer(
        {
            "bootstrap.servers": servers,
            "batch.num.messages": 1,
            "linger.ms": 0,
            "acks": "all",
            "enable.idempotence": True,
        }
    )
    for i, payload in enumerate(payloads):
        producer.produce(
            topic,
            value=payload,
            key=f"py-key-{i}",
            headers=[("origin", b"confluent-kafka"), ("seq", str(i).encode())],
            on_delivery=on_delivery,
        )
    left = producer.flush(WAIT)
    if left or errors or len(sent) != n:
        fail(f"producing to {topic}: {left} undelivered, errors {errors}")
    ok(f"kafka -> weir: a plain Producer wrote {n} messages with distinct keys")

    group = f"weir-interop-{os.getpid()}"
    out = weir(
        binary,
        ["queue", "consume", topic, "--bus", bus, "--group", group,
         "--idle", "2s", "--max", str(n)],
    )
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    expect(len(lines), n, f"lines printed by weir queue consume {topic}")
    by_key = {}
    for line in lines:
        if line["key"] in by_key:
            fail(f"key {line['key']} delivered twice")
        by_key[line["key"]] = line
    expect(sorted(by_key), sorted(f"py-key-{i}" for i in range(n)), "keys weir printed")

    for i, payload in enumerate(payloads):
        key = f"py-key-{i}"
        line = by_key[key]
        encoding = line.get("payload_encoding", "json")
        if encoding == "json":
            # Compared as a JSON value: `weir queue consume` prints it
            # re-serialized (object keys sorted), not byte for byte.
            if line["payload"] != json.loads(payload):
                fail(f"payload of {key} (json): expected {payload!r}, got {line['payload']!r}")
            got = payload
        elif encoding == "text":
            got = line["payload"].encode()
        elif encoding == "base64":
            got = base64.b64decode(line["payload"])
        else:
            fail(f"{key}: unknown payload_encoding {encoding!r}")
        expect(got, payload, f"payload of {key} ({encoding})")
        expect(line["headers"], {"origin": "confluent-kafka", "seq": str(i)}, f"headers of {key}")
        expect(line["topic"], topic, f"topic of {key}")
        expect(line["delivery_count"], 1, f"delivery_count of {key}")
        partition, offset, ts = sent[key]
        expect(line["id"], f"{partition}-{offset}", f"id of {key} (PARTITION-OFFSET)")
        stamp = datetime.fromtimestamp(ts / 1000, tz=timezone.utc)
        expect(line["timestamp"], stamp.strftime("%Y-%m-%dT%H:%M:%S.")
               + f"{ts % 1000:03d}Z", f"timestamp of {key}")
    expect(by_key["py-key-1"].get("payload_encoding"), None, "encoding of the JSON payload")
    expect(by_key["py-key-2"].get("payload_encoding"), "base64", "encoding of the binary payload")
    ok(f"kafka -> weir: weir printed all {n}: payloads (text exact, JSON inline as a value, "
       "binary base64 exact), "
       "keys, headers exact; id = partition-offset; timestamp = producer's CreateTime")

    # Weir's group G on topic T is the Kafka group "G:T"; its acks are
    # commits there, visible to any client.
    reader = Consumer({"bootstrap.servers": servers, "group.id": f"{group}:{topic}"})
    try:
        committed = reader.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=WAIT
        )
    finally:
        reader.close()
    ends = {}
    for partition, offset, _ in sent.values():
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    got = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    expect(got, ends, f"offsets committed by Kafka group {group}:{topic}")
    ok(f"kafka -> weir: acks are Kafka commits of group {group}:{topic} ({sum(ends.values())} messages)")

    again = weir(binary, ["queue", "consume", topic, "--bus", bus, "--group", group,
                          "--idle", "2s"])
    expect(again.decode().strip(), "", "a second consume by the same group")
    ok("kafka -> weir: a second consume by the same group prints nothing")


def dead_letters(servers, bus, binary, topic):
    """Weir dead-letters a message; a plain Consumer reads `T.dlq`."""
    weir(binary, ["queue", "publish", topic, "--bus", bus, *ONE_PER_BATCH,
                  "--key", "k-dead", "--header", "job=42", "poison pill"])
    # Never acked: the lease runs out after 1s, and with one delivery
    # allowed the message goes to `T.dlq`.
    group = f"weir-dlq-{os.getpid()}"
    out = weir(binary, ["queue", "consume", topic, "--bus", bus, "--group", group,
                        "--no-ack", "--max-deliveries", "1",
                        "--visibility-timeout", "1s", "--idle", "4s"])
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    expect(len(lines), 1, "deliveries before the dead letter")
    origin = lines[0]
    partition, offset = origin["id"].split("-")

    (m,) = read_all(servers, f"{topic}.dlq", 1, f"py-dlq-{os.getpid()}")
    expect(m.value(), b"poison pill", "dead letter payload")
    expect(m.key(), b"k-dead", "dead letter key")
    headers = [(n, v.decode()) for n, v in m.headers()]
    # The dead letter is a record of its own time; the original's time is
    # the origin timestamp (what `weir queue consume` printed).
    published = datetime.strptime(origin["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    published_ms = round(published.replace(tzinfo=timezone.utc).timestamp() * 1000)
    if m.timestamp()[1] < published_ms:
        fail(f"dead letter timestamp {m.timestamp()[1]} is before the original's {published_ms}")
    expect(headers, [
        ("job", "42"),
        ("x-weir-dlq-reason", "delivery_limit"),
        ("x-weir-origin-topic", topic),
        ("x-weir-origin-partition", partition),
        ("x-weir-origin-offset", offset),
        ("x-weir-origin-group", group),
        ("x-weir-origin-timestamp", str(published_ms)),
        ("x-weir-delivery-count", "1"),
    ], "dead letter headers")
    ok(f"dead letters: a plain Consumer read {topic}.dlq: payload, key, the message's "
       "headers, then reason, origin topic/partition/offset/group/timestamp, delivery count")


def main():
    if len(sys.argv) != 3 or not sys.argv[1].startswith("kafka://"):
        print("usage: kafka_interop.py kafka://host:port path/to/weir", file=sys.stderr)
        sys.exit(2)
    bus, binary = sys.argv[1], sys.argv[2]
    servers = bus.removeprefix("kafka://")
    if not os.access(binary, os.X_OK):
        fail(f"{binary} is not an executable weir")
    run = f"{os.getpid()}-{int(time.time())}"
    started_ms = int(time.time() * 1000)
    weir_to_kafka(servers, bus, binary, f"interop-w2k-{run}", started_ms)
    kafka_to_weir(servers, bus, binary, f"interop-k2w-{run}", 20)
    dead_letters(servers, bus, binary, f"interop-dlq-{run}")
    print("kafka-interop: all checks passed")


if __name__ == "__main__":
    main()

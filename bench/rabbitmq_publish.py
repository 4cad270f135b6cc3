#!/usr/bin/env python3
"""Publishes N messages to RabbitMQ over one connection (pika), for
bench/rabbitmq.sh: prints {"connect_ms": ..., "publish_per_s": ...}.

    rabbitmq_publish.py PORT USERNAME PASSWORD N

The exchange `bench` (fanout) and queue `bench-in` must exist. The last
message goes with a publisher confirm, so the time covers the broker having
taken every message, not only the socket buffer.
"""
import json
import sys
import time

import pika


def main():
    port, username, password, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=int(port), credentials=pika.PlainCredentials(username, password)
    )
    started = time.perf_counter()
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    connected = time.perf_counter()
    body = b"x" * 64
    for _ in range(count - 1):
        channel.basic_publish(exchange="bench", routing_key="", body=body)
    channel.confirm_delivery()
    channel.basic_publish(exchange="bench", routing_key="", body=body)
    finished = time.perf_counter()
    channel.queue_purge(queue="bench-in")
    connection.close()
    print(json.dumps({
        "connect_ms": round((connected - started) * 1000, 2),
        "publish_per_s": round(count / (finished - connected)),
    }))


if __name__ == "__main__":
    main()

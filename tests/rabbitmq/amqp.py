#!/usr/bin/env python3
"""One AMQP 0-9-1 action against RabbitMQ with pika, for tests/tests/rabbitmq.rs.

    amqp.py PORT USERNAME PASSWORD ACTION [ARG]

ACTION is one of:
  connect            open a connection and a channel
  setup              declare exchanges orders and billing (fanout) and queues
                     orders-in and billing-in bound to them
  publish EXCHANGE   publish one message to EXCHANGE
  get QUEUE          take one message from QUEUE
Prints one JSON line: {"ok": true, ...} or {"ok": false, "error": KIND, "detail": TEXT}
where KIND is "auth" (the broker refused the login), "access" (403 on a
channel) or "other". Exits 0 either way; the test reads the line.
"""
import json
import sys

import pika


def main():
    port, username, password, action = sys.argv[1:5]
    arg = sys.argv[5] if len(sys.argv) > 5 else None
    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=int(port),
        virtual_host="/",
        credentials=pika.PlainCredentials(username, password),
        connection_attempts=1,
        socket_timeout=10,
        blocked_connection_timeout=10,
    )
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.ProbableAuthenticationError as error:
        return report(False, "auth", error)
    except pika.exceptions.ProbableAccessDeniedError as error:
        return report(False, "access", error)
    except pika.exceptions.AMQPConnectionError as error:
        return report(False, "auth" if "ACCESS_REFUSED" in repr(error) else "other", error)
    try:
        channel = connection.channel()
        result = {}
        if action == "setup":
            for name in ("orders", "billing"):
                channel.exchange_declare(exchange=name, exchange_type="fanout", durable=False)
                channel.queue_declare(queue=f"{name}-in", durable=False)
                channel.queue_bind(queue=f"{name}-in", exchange=name)
        elif action == "publish":
            channel.confirm_delivery()
            channel.basic_publish(exchange=arg, routing_key="", body=b"hello")
        elif action == "get":
            method, _, body = channel.basic_get(queue=arg, auto_ack=True)
            result["body"] = body.decode() if body is not None else None
        elif action != "connect":
            return report(False, "other", f"unknown action {action}")
        connection.close()
        return report(True, None, None, result)
    except pika.exceptions.ChannelClosedByBroker as error:
        kind = "access" if error.reply_code == 403 else "other"
        return report(False, kind, error)
    except Exception as error:  # noqa: BLE001 - the test prints the detail
        return report(False, "other", error)


def report(ok, kind, detail, extra=None):
    line = {"ok": ok}
    if kind:
        line["error"] = kind
    if detail is not None:
        line["detail"] = repr(detail)
    line.update(extra or {})
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())

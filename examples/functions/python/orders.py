#!/usr/bin/env python3
"""An order-confirming function for Switchyard, written with the official CloudEvents SDK for
Python (`pip install cloudevents`) and the standard library's HTTP server.

It takes `com.example.order.placed` events whose data is `{"orderId": ..., "total": <number>}`
and replies with a `com.example.order.confirmed` event, which the broker stores. It shows the
answers a function gives (docs/sink-authors.md):

- 200 with a CloudEvent: delivered; the reply is stored in the broker;
- 204 (no body): delivered, nothing to reply (an event that is not ours);
- 422: the event can never succeed (no numeric `total`); dead-lettered at once, not retried;
- 503: try again later (`"simulate": "flaky"` fails the first attempt of each event); retried.

The reply's id is derived from the event's id, so a redelivery yields the same reply and the
work stays idempotent. PORT (default 8091; 0 picks one) is where it listens; it prints the
address when it is ready.
"""
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http, to_binary

FAILED_ONCE = set()
LOCK = threading.Lock()


class Orders(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            event = from_http({k.lower(): v for k, v in self.headers.items()}, body)
        except GenericException as e:
            return self.answer(400, {"error": f"not a CloudEvent: {e}"})
        if event["type"] != "com.example.order.placed":
            return self.answer(204)
        data = event.data if isinstance(event.data, dict) else {}
        total = data.get("total")
        if isinstance(total, bool) or not isinstance(total, (int, float)):
            return self.answer(422, {"error": "data.total must be a number"})
        if data.get("simulate") == "flaky":
            with LOCK:
                first = (event["source"], event["id"]) not in FAILED_ONCE
                FAILED_ONCE.add((event["source"], event["id"]))
            if first:
                return self.answer(503, {"error": "busy, try again"})
        attributes = {
            "type": "com.example.order.confirmed",
            "source": "/functions/orders/python",
            "id": f"{event['id']}.confirmed",
            "datacontenttype": "application/json",
        }
        if "orderId" in data:
            attributes["subject"] = str(data["orderId"])
        reply = CloudEvent(attributes, {"orderId": data.get("orderId"), "total": total})
        headers, payload = to_binary(reply)
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def answer(self, status, problem=None):
        payload = json.dumps(problem).encode() if problem else b""
        self.send_response(status)
        if payload:
            self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8091"))), Orders)
    print(f"orders function listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    server.serve_forever()

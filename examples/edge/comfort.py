#!/usr/bin/env python3
"""The edge example's function: a Knative-style sink in plain Python (standard library only).

POST /        a LoRaWAN uplink as a binary-mode CloudEvent (the reading's JSON as the body).
              Above the threshold it answers 200 with a reply event,
              `com.example.room.too-warm`, which Switchyard stores in the broker; otherwise
              204. A body without a temperature gets 422: it is dead-lettered, not retried.
POST /alerts  the replies, routed back by the `alerts` trigger: printed, 204.

Environment: PORT (default 8090), COMFORT_MAX_CELSIUS (default 26).
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_CELSIUS = float(os.environ.get("COMFORT_MAX_CELSIUS", "26"))


class Comfort(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/alerts":
            print(f"ALERT {self.headers.get('ce-subject')}: {body.decode()}", flush=True)
            self.answer(204)
            return
        try:
            reading = json.loads(body)
            temperature = float(reading["object"]["temperature"])
        except (ValueError, KeyError, TypeError) as e:
            problem = {"type": "about:blank", "title": "not a temperature reading", "detail": str(e)}
            self.answer(422, json.dumps(problem).encode(), {"content-type": "application/problem+json"})
            return
        device = (reading.get("deviceInfo") or {}).get("deviceName") or self.headers.get("ce-subject")
        if temperature <= MAX_CELSIUS:
            self.answer(204)
            return
        alert = {"device": device, "temperature": temperature, "maxCelsius": MAX_CELSIUS}
        self.answer(
            200,
            json.dumps(alert).encode(),
            {
                "ce-specversion": "1.0",
                # Derived from the reading's id: a delivery retried by the trigger makes the
                # same alert (MQTT gives a reading no id of its own, so the MqttSource makes one).
                "ce-id": f"{self.headers.get('ce-id')}.too-warm",
                "ce-source": "/functions/comfort",
                "ce-type": "com.example.room.too-warm",
                "ce-subject": device,
                "content-type": "application/json",
            },
        )

    def answer(self, status, body=b"", headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # quiet: one line per alert is the output
        pass


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8090"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Comfort)
    print(f"comfort function listening on http://127.0.0.1:{port}/ (max {MAX_CELSIUS} °C)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)

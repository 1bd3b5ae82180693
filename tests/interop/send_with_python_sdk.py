"""Sends events built by the official CloudEvents Python SDK (PyPI `cloudevents`) to a broker,
in binary and structured mode, and prints one JSON line per event with what was sent.

Usage: send_with_python_sdk.py <ingress-url>
"""
import base64
import json
import sys
import urllib.request

from cloudevents.http import CloudEvent, to_binary, to_structured

url = sys.argv[1]
cases = [
    ("binary", to_binary, {"type": "com.example.sdk.json", "source": "https://example.com/sdk",
                         "datacontenttype": "application/json"},
     {"message": "Hello World!", "n": 1}),
    ("structured", to_structured, {"type": "com.example.sdk.json", "source": "/sdk/structured",
                                   "subject": "Euro \u20ac \U0001F600", "myext": "v a l"},
     {"nested": {"list": [1, 2, 3]}, "text": "caf\u00e9"}),
    ("binary", to_binary, {"type": "com.example.sdk.bytes", "source": "/sdk/bytes",
                           "datacontenttype": "application/octet-stream"},
     bytes(range(256))),
    ("structured", to_structured, {"type": "com.example.sdk.bytes", "source": "/sdk/bytes"},
     b"\x00\x01binary\xff"),
]
for mode, encode, attributes, data in cases:
    event = CloudEvent(attributes, data)
    headers, body = encode(event)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request) as response:
        status = response.status
    print(json.dumps({
        "mode": mode,
        "status": status,
        "id": event["id"],
        "headers": {k: v for k, v in headers.items()},
        "body_b64": base64.b64encode(body).decode(),
    }))

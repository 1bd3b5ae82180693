"""Sends one event built by the official CloudEvents Python SDK (PyPI `cloudevents`) to a
broker in binary mode, with a bearer token, and prints the HTTP status it got.

Usage: send_with_token.py <ingress-url> <token> <type>
"""
import sys
import urllib.error
import urllib.request

from cloudevents.http import CloudEvent, to_binary

url, token, event_type = sys.argv[1:4]
event = CloudEvent({"type": event_type, "source": "https://shop.example/checkout"},
                   {"order": 42})
headers, body = to_binary(event)
headers["Authorization"] = f"Bearer {token}"
request = urllib.request.Request(url, data=body, headers=headers, method="POST")
try:
    with urllib.request.urlopen(request) as response:
        print(response.status)
except urllib.error.HTTPError as e:
    print(e.code)

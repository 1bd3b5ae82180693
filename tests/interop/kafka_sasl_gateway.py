"""A SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and TLS front door for a Kafka-protocol broker
that has neither, for the Kafka tests.

tansu, the Kafka-protocol broker the test command installs, cannot check SASL credentials
(it keeps no users) nor serve TLS itself; no broker that can is installable here (Apache
Kafka and Redpanda come from registries this machine cannot reach). This gateway does the
server's half of Kafka's SASL exchange (KIP-43 SaslHandshake, KIP-152 SaslAuthenticate; SCRAM
as RFC 5802 and KIP-84 define it), then relays the authenticated connection to tansu byte for
byte. tansu advertises the gateway's address, so every connection a client makes goes through
it. The client side, librdkafka inside switchyard, is the real one.

    python kafka_sasl_gateway.py --listen PORT --upstream HOST:PORT --user NAME:PASSWORD \
        [--cert CERT.pem --key KEY.pem]

Prints `listening` once it accepts connections, and one line per authentication
(`authenticated NAME with MECHANISM`, `refused NAME with MECHANISM: why`).
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
import sys

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SCRAM_ITERATIONS = 4096


def say(line):
    print(line, flush=True)


async def read_frame(reader):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def frame(body):
    return struct.pack(">i", len(body)) + body


def request_header(payload):
    """(api_key, api_version, correlation_id, offset of the body) of a non-flexible request
    (header v1: key, version, correlation id, nullable client id)."""
    key, version, correlation = struct.unpack_from(">hhi", payload)
    (client_len,) = struct.unpack_from(">h", payload, 8)
    return key, version, correlation, 10 + max(client_len, 0)


def uvarint(data, at):
    value = shift = 0
    while True:
        b = data[at]
        at += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, at
        shift += 7


def put_uvarint(value):
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def with_sasl_apis(response, version):
    """An ApiVersions response with SaslHandshake and SaslAuthenticate (v0–v1) listed, whatever
    the broker behind said of them. Its header is always v0 (the correlation id alone)."""
    correlation, error = struct.unpack_from(">ih", response)
    at = 6
    entries = []
    if version >= 3:
        count, at = uvarint(response, at)
        count -= 1
        for _ in range(max(count, 0)):
            key, lo, hi = struct.unpack_from(">hhh", response, at)
            at += 6
            tags, at = uvarint(response, at)
            assert tags == 0, "ApiVersions entry with tagged fields"
            entries.append((key, lo, hi))
    else:
        (count,) = struct.unpack_from(">i", response, at)
        at += 4
        for _ in range(max(count, 0)):
            entries.append(struct.unpack_from(">hhh", response, at))
            at += 6
    rest = response[at:]
    entries = [e for e in entries if e[0] not in (SASL_HANDSHAKE, SASL_AUTHENTICATE)]
    entries += [(SASL_HANDSHAKE, 0, 1), (SASL_AUTHENTICATE, 0, 1)]
    out = struct.pack(">ih", correlation, error)
    if version >= 3:
        out += put_uvarint(len(entries) + 1)
        out += b"".join(struct.pack(">hhh", *e) + b"\x00" for e in entries)
    else:
        out += struct.pack(">i", len(entries))
        out += b"".join(struct.pack(">hhh", *e) for e in entries)
    return out + rest


def kafka_string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def kafka_bytes(b):
    return struct.pack(">i", len(b)) + b


class Scram:
    """The server's side of one SCRAM exchange (RFC 5802), for one user's password."""

    def __init__(self, mechanism, users):
        self.hash = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
        self.users = users
        self.step = 0

    def h(self, data):
        return hashlib.new(self.hash, data).digest()

    def mac(self, key, data):
        return hmac.new(key, data, self.hash).digest()

    def next(self, message):
        """The answer to the client's message, and the user once authenticated; raises
        ValueError when the exchange fails."""
        text = message.decode()
        if self.step == 0:
            self.step = 1
            gs2, _, bare = text.partition(",,")
            if not gs2.startswith("n"):
                raise ValueError("channel binding is not supported")
            fields = dict(f.split("=", 1) for f in bare.split(","))
            self.user = fields["n"].replace("=2C", ",").replace("=3D", "=")
            if self.user not in self.users:
                raise ValueError("unknown user")
            self.client_first_bare = bare
            self.nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
            self.salt = os.urandom(16)
            self.server_first = "r={},s={},i={}".format(
                self.nonce, base64.b64encode(self.salt).decode(), SCRAM_ITERATIONS
            )
            return self.server_first.encode(), None
        if self.step == 1:
            self.step = 2
            without_proof, _, proof = text.rpartition(",p=")
            fields = dict(f.split("=", 1) for f in without_proof.split(","))
            if fields.get("r") != self.nonce:
                raise ValueError("nonce mismatch")
            salted = hashlib.pbkdf2_hmac(
                self.hash, self.users[self.user].encode(), self.salt, SCRAM_ITERATIONS
            )
            client_key = self.mac(salted, b"Client Key")
            auth_message = ",".join(
                [self.client_first_bare, self.server_first, without_proof]
            ).encode()
            signature = self.mac(self.h(client_key), auth_message)
            given = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
            if not hmac.compare_digest(self.h(given), self.h(client_key)):
                raise ValueError("wrong password")
            server_key = self.mac(salted, b"Server Key")
            verifier = base64.b64encode(self.mac(server_key, auth_message)).decode()
            return f"v={verifier}".encode(), self.user
        raise ValueError("the exchange is over")


def plain(message, users):
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise ValueError("malformed PLAIN message")
    user, password = parts[1].decode(), parts[2].decode()
    if users.get(user) != password:
        raise ValueError("wrong password" if user in users else "unknown user")
    return user


async def relay(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve_client(reader, writer, upstream, users):
    host, port = upstream
    try:
        up_reader, up_writer = await asyncio.open_connection(host, port)
    except OSError:
        writer.close()
        return
    mechanism = None
    exchange = None
    try:
        while True:
            payload = await read_frame(reader)
            key, version, correlation, body_at = request_header(payload)
            if key == API_VERSIONS:
                up_writer.write(frame(payload))
                await up_writer.drain()
                response = await read_frame(up_reader)
                writer.write(frame(with_sasl_apis(response, version)))
            elif key == SASL_HANDSHAKE:
                (length,) = struct.unpack_from(">h", payload, body_at)
                asked = payload[body_at + 2 : body_at + 2 + length].decode()
                error = 0 if asked in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
                mechanism = asked if error == 0 else None
                if mechanism and mechanism.startswith("SCRAM"):
                    exchange = Scram(mechanism, users)
                body = struct.pack(">ih", correlation, error)
                body += struct.pack(">i", len(MECHANISMS))
                body += b"".join(kafka_string(m) for m in MECHANISMS)
                writer.write(frame(body))
            elif key == SASL_AUTHENTICATE and mechanism:
                (length,) = struct.unpack_from(">i", payload, body_at)
                message = payload[body_at + 4 : body_at + 4 + length]
                who = None
                try:
                    if mechanism == "PLAIN":
                        answer, who = b"", plain(message, users)
                    else:
                        answer, who = exchange.next(message)
                    error, text = 0, None
                except (ValueError, KeyError) as e:
                    answer, error, text = b"", SASL_AUTHENTICATION_FAILED, str(e)
                body = struct.pack(">ih", correlation, error)
                body += kafka_string(text) if text else struct.pack(">h", -1)
                body += kafka_bytes(answer)
                if version >= 1:
                    body += struct.pack(">q", 0)
                writer.write(frame(body))
                await writer.drain()
                if error:
                    user = getattr(exchange, "user", None) or "?"
                    say(f"refused {user} with {mechanism}: {text}")
                    return
                if who:
                    say(f"authenticated {who} with {mechanism}")
                    break
            else:
                # Anything else before authentication is refused by closing, as Kafka does.
                say(f"refused a request (api key {key}) before authentication")
                return
            await writer.drain()
        await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        writer.close()
        up_writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--user", action="append", default=[])
    p.add_argument("--cert")
    p.add_argument("--key")
    args = p.parse_args()
    users = dict(u.split(":", 1) for u in args.user)
    host, port = args.upstream.rsplit(":", 1)
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
    server = await asyncio.start_server(
        lambda r, w: serve_client(r, w, (host, int(port)), users),
        "127.0.0.1",
        args.listen,
        ssl=context,
    )
    say("listening")
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

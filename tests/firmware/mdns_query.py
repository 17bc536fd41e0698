"""Asks the LAN for the IPv4 address of one `.local` name over mDNS (RFC 6762) and prints
it: a plain multicast query from port 5353, answered by multicast. Written with the standard
library alone, so that the box's responder is checked by code other than its own library.

usage: python3 mdns_query.py NAME.local INTERFACE_IPV4 TIMEOUT_SECONDS
Exit status 0 with the address on stdout, 1 when no answer came within the timeout."""

from __future__ import annotations

import socket
import struct
import sys
import time

GROUP = "224.0.0.251"
PORT = 5353
TYPE_A = 1
CLASS_IN = 1


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def read_name(packet: bytes, at: int) -> tuple[str, int]:
    """The name at `at` (following compression pointers) and the offset after it."""
    labels = []
    end = None
    for _ in range(128):  # bounded: a pointer loop cannot hang us
        length = packet[at]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = at + 2
            at = ((length & 0x3F) << 8) | packet[at + 1]
            continue
        if length == 0:
            return ".".join(labels), (end if end is not None else at + 1)
        labels.append(packet[at + 1:at + 1 + length].decode(errors="replace"))
        at += 1 + length
    raise ValueError("name too long or looping")


def a_records(packet: bytes) -> list[tuple[str, str]]:
    """(name, IPv4 address) of every A record in the answer and additional sections."""
    _, flags, qd, an, ns, ar = struct.unpack_from("!6H", packet, 0)
    if not flags & 0x8000:  # a query, not a response
        return []
    at = 12
    for _ in range(qd):
        _, at = read_name(packet, at)
        at += 4
    found = []
    for _ in range(an + ns + ar):
        name, at = read_name(packet, at)
        rtype, rclass, _ttl, length = struct.unpack_from("!HHIH", packet, at)
        at += 10
        if rtype == TYPE_A and rclass & 0x7FFF == CLASS_IN and length == 4:
            found.append((name.lower(), socket.inet_ntoa(packet[at:at + 4])))
        at += length
    return found


def query(name: str, interface: str, timeout: float) -> str | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", PORT))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                    socket.inet_aton(GROUP) + socket.inet_aton(interface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    question = struct.pack("!6H", 0, 0, 1, 0, 0, 0) + encode_name(name) + struct.pack(
        "!HH", TYPE_A, CLASS_IN)
    wanted = name.rstrip(".").lower()
    deadline = time.monotonic() + timeout
    next_send = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_send:
            sock.sendto(question, (GROUP, PORT))
            next_send = now + 2.0
        sock.settimeout(max(0.1, min(next_send, deadline) - time.monotonic()))
        try:
            packet, _ = sock.recvfrom(9000)
        except socket.timeout:
            continue
        try:
            for record_name, address in a_records(packet):
                if record_name == wanted:
                    return address
        except (ValueError, IndexError, struct.error):
            continue  # a malformed packet from someone else
    return None


def main() -> int:
    name, interface, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    address = query(name, interface, timeout)
    if address is None:
        print(f"no mDNS answer for {name} within {timeout} s", file=sys.stderr)
        return 1
    print(address)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
B9: what the service's strict parse costs next to a plain
C{yaml.load(..., Loader=yaml.CSafeLoader)} of the same bytes, for a large
ordinary file and for the hostile shapes that fit in 1 MiB.

Each parse runs in a fresh interpreter, so its peak RSS is its own; the
two parsers run alternately, so both see the same machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.context import Context, Row

_MiB = 1024 * 1024

#: Run in a child: parse stdin with the service's parser or the plain C
#: loader, print CPU seconds, peak RSS, the outcome and a digest of the value.
_CHILD = """
import hashlib, json, resource, sys, time
import yaml
from twisted_demo.live import ConfigError, parse_yaml
raw = sys.stdin.buffer.read()
start = time.process_time()
try:
    if sys.argv[1] == "plain":
        value = yaml.load(raw, Loader=yaml.CSafeLoader)
    else:
        value = parse_yaml(raw)
    outcome = "accepted"
except ConfigError as e:
    value, outcome = None, str(e)
seconds = time.process_time() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
digest = hashlib.sha256(repr(value).encode()).hexdigest()
print(json.dumps([seconds, peak, outcome, digest]))
"""


def _fill(size: int, head: bytes, unit: bytes, tail: bytes) -> bytes:
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


def shapes(size: int) -> dict[str, bytes]:
    """
    The files measured, each at most C{size} bytes.
    """
    lines = [b"message: x\n"]
    total, i = len(lines[0]), 0
    while True:
        line = b"key%d: value%d\n" % (i, i)
        if total + len(line) > size:
            break
        lines.append(line)
        total += len(line)
        i += 1
    return {
        "keys": b"".join(lines),
        "long_list": _fill(size, b"message: x\nk: [", b"0,", b"0]\n"),
        "empty_maps": _fill(size, b"message: x\nk: [", b"{},", b"{}]\n"),
        "duplicate_keys": _fill(size, b"message: x\n", b"a: 0\n", b""),
    }


def _alias_bomb() -> bytes:
    lol = b",".join([b'"lol"'] * 9)
    lines = [b"message: boom", b"a: &a [%s]" % (lol,)]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        refs = b",".join([b"*" + previous.encode()] * 9)
        lines.append(b"%s: &%s [%s]" % (name.encode(), name.encode(), refs))
    return b"\n".join(lines) + b"\n"


#: Documents within 1 MiB that the service must refuse cheaply.
HOSTILE: dict[str, bytes] = {
    "alias_bomb": _alias_bomb(),
    "deep_flow_lists": b"message: a\nx: " + b"[" * 500_000 + b"]" * 500_000,
    "deep_flow_mappings": b"message: a\nx: "
    + b"{a: " * 200_000
    + b"1"
    + b"}" * 200_000,
    "deep_block_mappings": b"message: a\n"
    + b"".join(b" " * i + b"a:\n" for i in range(1400))
    + b" " * 1400
    + b"1\n",
}


def _parse(mode: str, raw: bytes) -> tuple[float, int, str, str]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        input=raw,
        capture_output=True,
        timeout=300,
        check=True,
    )
    seconds, peak, outcome, digest = json.loads(done.stdout)
    return seconds, peak, outcome, digest


def run(ctx: Context) -> None:
    """B9."""
    size = 64 * 1024 if ctx.quick else _MiB
    rounds = 1 if ctx.quick else 3
    described: list[str] = []
    worst = 0.0
    for name, raw in shapes(size).items():
        ours: list[float] = []
        plain: list[float] = []
        peaks: list[int] = []
        for _ in range(rounds):
            p_seconds, _p_peak, _p_outcome, p_digest = _parse("plain", raw)
            o_seconds, o_peak, o_outcome, o_digest = _parse("ours", raw)
            plain.append(p_seconds)
            ours.append(o_seconds)
            peaks.append(o_peak)
            if name == "duplicate_keys":
                if "duplicate key" not in o_outcome:
                    ctx.fail(f"B9 {name}: not refused as duplicate: {o_outcome}")
            elif o_outcome != "accepted" or o_digest != p_digest:
                ctx.fail(f"B9 {name}: parsed differently from the C loader")
        ratio = min(ours) / min(plain)
        worst = max(worst, ratio)
        described.append(
            f"{name} {ratio:.2f}x ({min(ours) * 1000:.0f} vs"
            f" {min(plain) * 1000:.0f} ms, peak {max(peaks) / _MiB:.0f} MiB)"
        )
    refused: list[str] = []
    for name, raw in HOSTILE.items():
        seconds, peak, outcome, _ = _parse("ours", raw)
        if outcome == "accepted":
            ctx.fail(f"B9 {name}: accepted")
        refused.append(f"{name} {seconds * 1000:.0f} ms, peak {peak / _MiB:.0f} MiB")
    ctx.detail(
        "B9: hostile documents refused (CPU time, peak RSS of the parsing"
        " interpreter): " + "; ".join(refused)
    )
    ctx.detail(
        f"B9: CPU time of the service's parse against a plain CSafeLoader load"
        f" of the same {size // 1024} KiB, best of {rounds} alternate runs each,"
        f" peak RSS of the parsing interpreter: " + "; ".join(described)
    )
    ctx.row(
        Row(
            "B9",
            f"strict parse vs plain `yaml.CSafeLoader`, {size // 1024} KiB files"
            " (keys, a long list, empty maps, duplicate keys)",
            "<= 1.2x",
            "; ".join(described),
            "pass" if worst <= 1.2 else "miss",
        )
    )

"""The default partitioner's key hash, faster: Kafka's murmur2 over whole 32-bit words.

kafka-python's ``murmur2`` assembles each word from four byte reads in Python;
the router hashes every referral id once for all its destinations, so it reads
the words with one ``struct`` call instead. Same result for every key (tested
against kafka-python's).
"""

from __future__ import annotations

import struct

__all__ = ["key_hash"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def key_hash(data: bytes) -> int:
    """``murmur2(data) & 0x7fffffff``: the default partitioner's hash of a key."""
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        base = words << 2
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h ^= data[base]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h & 0x7FFFFFFF

"""Many clients' mini-batch orders at once, drawn exactly as their own generators draw them.

A client's generator in a round is ``numpy.random.default_rng([seed, round, client, stream])``
(:func:`fedge.core.types.client_rng`), and an epoch's batch order is one
``permutation(n)`` of it (:func:`fedge.clients.base.batches`). Making that generator costs
about 20 µs, more than a small client's whole local step, so a round of thousands of small
clients spends most of its time seeding generators one by one. :func:`client_permutations`
computes the same permutations for a whole cohort with array operations over the client
axis: NumPy's ``SeedSequence`` hashing (O'Neill's seed_seq design, as NumPy implements it),
the PCG64 generator's 128-bit LCG step and XSL-RR output (O'Neill, "PCG: A Family of Simple
Fast Space-Efficient Statistically Good Algorithms for Random Number Generation", 2014),
and NumPy's Fisher-Yates shuffle with bounded draws by masked rejection, consuming the
generator's 32-bit words in the order NumPy does.

The result must equal NumPy's bit for bit; :func:`available` checks that once per process
against NumPy itself, and callers fall back to the generators one by one when it does not
(a NumPy release that changed any step).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedge.core.types import client_rng

U64 = npt.NDArray[np.uint64]
_M32 = np.uint64(0xFFFFFFFF)
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = np.uint32(0xCA01F9DD), np.uint32(0x4973F715)
_MULT_HI, _MULT_LO = np.uint64(2549297995355413924), np.uint64(4865540595714422341)
"""PCG's default 128-bit multiplier, high and low words."""


def _hashes(init: int, mult: int, count: int) -> list[np.uint32]:
    """The successive hash constants of ``SeedSequence``'s mixing (they do not depend on the entropy)."""
    out, h = [], init
    for _ in range(count):
        out.append(np.uint32(h))
        h = (h * mult) & 0xFFFFFFFF
        out.append(np.uint32(h))
    return out


def _pool(entropy: npt.NDArray[np.uint32]) -> list[npt.NDArray[np.uint32]]:
    """``SeedSequence(entropy_row).pool`` for each row of four 32-bit words."""
    consts = iter(_hashes(_INIT_A, _MULT_A, 16))

    def hashmix(v: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
        v = v ^ next(consts)
        v = v * next(consts)
        return v ^ (v >> np.uint32(16))

    pool = [hashmix(entropy[:, i]) for i in range(4)]
    for src in range(4):
        for dst in range(4):
            if src != dst:
                r = _MIX_L * pool[dst] - _MIX_R * hashmix(pool[src])
                pool[dst] = r ^ (r >> np.uint32(16))
    return pool


def _state_words(pool: list[npt.NDArray[np.uint32]]) -> list[U64]:
    """``generate_state(4, np.uint64)`` from each row's pool: PCG64's seed and increment words."""
    consts = iter(_hashes(_INIT_B, _MULT_B, 8))
    words = []
    for i in range(8):
        v = pool[i % 4] ^ next(consts)
        v = v * next(consts)
        words.append((v ^ (v >> np.uint32(16))).astype(np.uint64))
    return [words[2 * j] | (words[2 * j + 1] << np.uint64(32)) for j in range(4)]


def _mul64(a: U64, b: np.uint64) -> tuple[U64, U64]:
    """The full 128-bit product of 64-bit words, as (high, low)."""
    a_lo, a_hi = a & _M32, a >> np.uint64(32)
    b_lo, b_hi = b & _M32, b >> np.uint64(32)
    ll, lh, hl, hh = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    mid = (ll >> np.uint64(32)) + (lh & _M32) + (hl & _M32)
    lo = (ll & _M32) | ((mid & _M32) << np.uint64(32))
    hi = hh + (lh >> np.uint64(32)) + (hl >> np.uint64(32)) + (mid >> np.uint64(32))
    return hi, lo


@dataclass
class _Pcg:
    """PCG64 states of many clients: 128-bit state and increment as 64-bit halves."""

    hi: U64
    lo: U64
    inc_hi: U64
    inc_lo: U64

    @classmethod
    def seeded(cls, words: list[U64]) -> _Pcg:
        """NumPy's ``pcg64_set_seed``: state 0, increment ``2 seq + 1``, step, add the seed, step."""
        s_hi, s_lo, q_hi, q_lo = words
        inc_hi = (q_hi << np.uint64(1)) | (q_lo >> np.uint64(63))
        inc_lo = (q_lo << np.uint64(1)) | np.uint64(1)
        zero = np.zeros_like(s_hi)
        g = cls(zero, zero.copy(), inc_hi, inc_lo)
        g.step()
        lo = g.lo + s_lo
        g.hi = g.hi + s_hi + (lo < g.lo).astype(np.uint64)
        g.lo = lo
        g.step()
        return g

    def step(self) -> None:
        p_hi, p_lo = _mul64(self.lo, _MULT_LO)
        hi = p_hi + self.lo * _MULT_HI + self.hi * _MULT_LO
        lo = p_lo + self.inc_lo
        self.hi = hi + self.inc_hi + (lo < p_lo).astype(np.uint64)
        self.lo = lo

    def next64(self) -> U64:
        self.step()
        x = self.hi ^ self.lo
        rot = self.hi >> np.uint64(58)
        left = (np.uint64(64) - rot) & np.uint64(63)
        out: U64 = np.bitwise_or(np.right_shift(x, rot), np.left_shift(x, left))
        return out


@dataclass
class Streams:
    """Each client's permutations, and where its generator stands after drawing them."""

    permutations: npt.NDArray[np.int64]
    """(clients, count, n): client ``i``'s ``count`` successive ``permutation(n)``."""
    words: npt.NDArray[np.uint64]
    used: npt.NDArray[np.int64]
    """How many of each client's 32-bit words the permutations consumed."""
    pcg: list[tuple[int, int]]
    """Each client's 128-bit (state, increment) after the 64-bit draws made for ``words``."""

    def generator(self, i: int, seed: int, round_num: int, client_id: int, stream: int = 0) -> np.random.Generator:
        """Client ``i``'s generator, in the state its own generator would be in after the permutations."""
        g = client_rng(seed, round_num, client_id, stream)
        used, drawn = int(self.used[i]), self.words.shape[1]
        state, inc = self.pcg[i]
        # Each 64-bit draw gives two 32-bit words, low half first; rewind to the draw holding
        # word ``used`` (the last draws were made ahead and are not part of the stream yet).
        back = (drawn - used) // 2
        state = _rewind(state, inc, back)
        odd = used % 2 == 1
        g.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": state, "inc": inc},
            "has_uint32": int(odd),
            # NumPy keeps the last buffered half after using it; so does this, for equal states.
            "uinteger": int(self.words[i, used if odd else used - 1]) if used else 0,
        }
        return g


_MULT128 = (int(_MULT_HI) << 64) | int(_MULT_LO)
_MASK128 = (1 << 128) - 1


def _rewind(state: int, inc: int, steps: int) -> int:
    """The LCG state ``steps`` steps before ``state`` (the multiplier is odd, so invertible mod 2^128)."""
    inv = pow(_MULT128, -1, 1 << 128)
    for _ in range(steps):
        state = ((state - inc) * inv) & _MASK128
    return state


def client_permutations(
    seed: int, round_num: int, client_ids: Sequence[int], n: int, count: int, stream: int = 0
) -> Streams:
    """``count`` successive ``client_rng(seed, round_num, c, stream).permutation(n)`` for every client ``c``."""
    k = len(client_ids)
    if min(seed, round_num, stream, *client_ids, 0) < 0 or max(seed, round_num, stream, *client_ids, 0) >= 2**32:
        raise ValueError("seed, round, client ids and stream must fit 32 bits")
    entropy = np.empty((k, 4), dtype=np.uint32)
    entropy[:, 0], entropy[:, 1], entropy[:, 3] = seed, round_num, stream
    entropy[:, 2] = np.asarray(client_ids, dtype=np.uint32)
    pcg = _Pcg.seeded(_state_words(_pool(entropy)))
    need = max(2 * n * count, 2)
    words = _draw(pcg, need)
    rows = np.arange(k)
    used = np.zeros(k, dtype=np.int64)
    out = np.empty((k, count, n), dtype=np.int64)
    for c in range(count):
        perm = np.tile(np.arange(n, dtype=np.int64), (k, 1))
        for i in range(n - 1, 0, -1):
            mask = i
            for shift in (1, 2, 4, 8, 16):
                mask |= mask >> shift
            j = np.empty(k, dtype=np.int64)
            todo = rows
            while len(todo):
                if int(used[todo].max()) >= words.shape[1]:
                    words = np.concatenate([words, _draw(pcg, words.shape[1])], axis=1)
                v = (words[todo, used[todo]] & np.uint64(mask)).astype(np.int64)
                used[todo] += 1
                ok = v <= i
                j[todo[ok]] = v[ok]
                todo = todo[~ok]
            held = perm[:, i].copy()
            perm[:, i] = perm[rows, j]
            perm[rows, j] = held
        out[:, c] = perm
    states = [
        ((int(h) << 64) | int(lo), (int(ih) << 64) | int(il))
        for h, lo, ih, il in zip(pcg.hi, pcg.lo, pcg.inc_hi, pcg.inc_lo, strict=True)
    ]
    return Streams(out, words, used, states)


def _draw(pcg: _Pcg, words: int) -> npt.NDArray[np.uint64]:
    """The next ``words`` (rounded up to even) 32-bit words of every client's stream, low half of each draw first."""
    draws = -(-words // 2)
    out = np.empty((len(pcg.hi), 2 * draws), dtype=np.uint64)
    for t in range(draws):
        v = pcg.next64()
        out[:, 2 * t] = v & _M32
        out[:, 2 * t + 1] = v >> np.uint64(32)
    return out


@functools.cache
def available() -> bool:
    """Whether :func:`client_permutations` reproduces this NumPy's generators (checked once)."""
    try:
        got = client_permutations(7, 3, [0, 1, 12345, 2**32 - 1], 37, 3)
    except Exception:
        return False
    for i, cid in enumerate((0, 1, 12345, 2**32 - 1)):
        g = client_rng(7, 3, cid)
        want = np.stack([g.permutation(37) for _ in range(3)])
        if not np.array_equal(want, got.permutations[i]):
            return False
        if got.generator(i, 7, 3, cid).bit_generator.state != g.bit_generator.state:
            return False
    return True

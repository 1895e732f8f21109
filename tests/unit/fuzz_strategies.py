"""Hypothesis strategies shared by the property tests of the codecs.

A stream decoder must give the same events however the network cut the bytes, so
each such property is stated on the same bytes once whole and once cut at points the
fuzzer picks (empty pieces included).
"""

from __future__ import annotations

from hypothesis import strategies as st


def pieces(whole: bytes) -> st.SearchStrategy[list[bytes]]:
    """`whole` cut at up to 32 points the fuzzer picks."""

    def split(cuts: list[int]) -> list[bytes]:
        cuts = sorted(cuts)
        return [whole[start:end] for start, end in zip([0, *cuts], [*cuts, len(whole)])]

    return st.lists(st.integers(0, len(whole)), max_size=32).map(split)


def chunked(wholes: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[bytes, list[bytes]]]:
    """(whole, its pieces)."""
    return wholes.flatmap(lambda whole: pieces(whole).map(lambda cut: (whole, cut)))


def tokens(*fragments: bytes, max_size: int = 60) -> st.SearchStrategy[bytes]:
    """Bytes made mostly of a codec's delimiters and header fragments, with random
    bytes between: random bytes alone rarely hold a delimiter, so they never reach
    the paths behind one."""
    return st.lists(st.one_of(st.sampled_from(fragments), st.binary(max_size=8)), max_size=max_size).map(b"".join)

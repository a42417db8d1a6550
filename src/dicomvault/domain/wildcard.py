"""DICOM wildcard matching (PS3.4 C.2.2.2.4) in time linear in the value for each pattern segment, no regex.

``*`` matches any sequence of characters (also none), ``?`` exactly one character; everything else matches itself,
case-sensitively (callers fold person names first, see ``domain.query.fold_pn``). Used for keys the index does not
hold as columns, matched against the DICOM JSON cached per instance.

Why not a regular expression: the former translation (``*`` → ``.*``) backtracks. ``*A*A*A*A*A*A*A*B`` against 64
× ``A`` took 15.5 s over QIDO-RS (13.4 s over C-FIND) holding the GIL, which stalled every other request of the
process, ``/healthz`` included (issue #9). No maintained library offers a non-backtracking glob for Python strings
(``fnmatch`` also compiles to a backtracking ``re``), hence this small matcher:

1. split the pattern on ``*``: the segments between stars contain only literals and ``?``;
2. the first segment must match at the start of the value and the last one at its end (unless the pattern has no
   ``*`` at all: then the value must have exactly the pattern's length and match it position by position);
3. the segments in between are found left to right, each at the leftmost position after the previous one.
   Taking the leftmost occurrence is always safe: any later placement leaves less room for the segments that
   follow, so if a match exists the greedy one exists too.

Each segment is located with ``str.find`` on its first run of literal characters and confirmed with
``str.startswith`` for its other runs, so the work is at most O(len(value) × runs in the pattern) character
comparisons, done in C, and never revisits an earlier segment. Both SQL engines' LIKE (used for indexed columns)
are already polynomial: ``%A%A%A%A%A%A%A%B`` over 1,000 values of 64 × ``A`` takes 0.2 ms in SQLite 3.40 and 0.4 ms
in PostgreSQL; pattern length and wildcard count are capped anyway (``domain.query.QueryLimits``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _Segment:
    """A piece of a pattern between two ``*``: its length and its runs of literal characters (offset, text);
    the positions not covered by a run are ``?``."""

    length: int
    runs: tuple[tuple[int, str], ...]

    @classmethod
    def parse(cls, text: str) -> _Segment:
        runs: list[tuple[int, str]] = []
        start = None
        for i, ch in enumerate(text):
            if ch == "?":
                if start is not None:
                    runs.append((start, text[start:i]))
                    start = None
            elif start is None:
                start = i
        if start is not None:
            runs.append((start, text[start:]))
        return cls(len(text), tuple(runs))

    def matches_at(self, value: str, pos: int) -> bool:
        """Whether the segment matches ``value`` at ``pos`` (the caller checked it fits)."""
        return all(value.startswith(run, pos + offset) for offset, run in self.runs)

    def find(self, value: str, start: int, end: int) -> int:
        """The leftmost position p >= start with the segment matching value[p:p+length] and p+length <= end,
        or -1."""
        last = end - self.length  # the last position the segment may start at
        if last < start:
            return -1
        if not self.runs:  # only '?': any position with room
            return start
        offset, first = self.runs[0]
        # The first run sits at p + offset: look for it where a segment starting in [start, last] would put it.
        search_from, search_to = start + offset, last + offset + len(first)
        while True:
            found = value.find(first, search_from, search_to)
            if found < 0:
                return -1
            pos = found - offset
            if self.matches_at(value, pos):
                return pos
            search_from = found + 1


class WildcardPattern:
    """A compiled DICOM wildcard pattern; compile once per query, match against every candidate value."""

    __slots__ = ("_exact", "_first", "_last", "_middle", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        parts = pattern.split("*")
        self._exact = len(parts) == 1
        self._first = _Segment.parse(parts[0])
        self._last = _Segment.parse(parts[-1])
        self._middle = tuple(_Segment.parse(p) for p in parts[1:-1] if p)

    def match(self, value: str) -> bool:
        """Whether the whole of ``value`` matches the pattern."""
        first, last = self._first, self._last
        if self._exact:
            return len(value) == first.length and first.matches_at(value, 0)
        if first.length + last.length > len(value):
            return False
        end = len(value) - last.length
        if not (first.matches_at(value, 0) and last.matches_at(value, end)):
            return False
        pos = first.length
        for segment in self._middle:
            found = segment.find(value, pos, end)
            if found < 0:
                return False
            pos = found + segment.length
        return True


def wildcard_match(pattern: str, value: str) -> bool:
    """Match one value against a DICOM wildcard pattern (compile with ``WildcardPattern`` to match many)."""
    return WildcardPattern(pattern).match(value)

"""Rounds of "DELETE a study while the same bytes are stored again" (issue #9, defect 1), shared by the
service-level and front-end race tests.

Each round stores a fresh study of a few instances, then runs two threads released together: one deletes the
study, the other re-sends the same objects one after the other, so that some re-sends meet a blob after the
delete committed and before it removed the blob, the window where objects were lost. One of the two starts after
a random pause of up to a few recent delete durations (the re-sender more often), so every interleaving occurs.
After both are done, every instance the index answers for must come back with its exact bytes, and a re-send
acknowledged as a *new* store (it came after the delete removed the old row, so that delete cannot remove it any
more) must be indexed; anything else is a loss. Nothing here knows the fix: the same rounds lost objects before.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from pydicom.uid import generate_uid

from tests.helpers import make_ct

#: (study UID, series UID, SOP Instance UID) → the bytes served for it, or None when missing/unreadable.
Retrieve = Callable[[str, str, str], "bytes | None"]

#: What a re-send was answered: acknowledged as a new store, acknowledged (duplicate, or the front end does not
#: tell), or refused with "try again" (a removal that did not finish in time: never a loss).
STORED, ACKNOWLEDGED, UNAVAILABLE = "stored", "acknowledged", "unavailable"


@dataclass
class Tally:
    rounds: int = 0
    #: instances the index answered for after their round
    indexed: int = 0
    #: instances the index no longer answered for (the delete came last: legitimately gone)
    gone: int = 0
    #: acknowledged re-sends refused with "try again" (a removal that did not finish in time): never a loss
    unavailable: int = 0
    #: what went wrong, one line per lost object
    losses: list[str] = field(default_factory=list)


@dataclass
class Round:
    study: str
    series: str
    objects: list[tuple[str, bytes]]  # (SOP Instance UID, Part 10 bytes)


def new_round(n: int, per_study: int) -> Round:
    study, series = generate_uid(), generate_uid()
    objects = []
    for i in range(per_study):
        sop = generate_uid()
        objects.append((sop, make_ct(study=study, series=series, sop=sop, seed=n * 16 + i, InstanceNumber=i + 1)))
    return Round(study, series, objects)


def together(first: Callable[[], object], second: Callable[[], object], *, lead: float = 0.0) -> list[object]:
    """Run two callables in threads released at the same instant (``second`` starts ``lead`` seconds later, or
    ``first`` -``lead`` seconds later when negative); their results, or the first exception raised."""
    gate = threading.Barrier(2)
    results: list[object] = [None, None]
    errors: list[BaseException] = []

    def run(i: int, fn: Callable[[], object], pause: float) -> None:
        gate.wait()
        time.sleep(pause)
        try:
            results[i] = fn()
        except BaseException as exc:  # surfaced by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(0, first, max(0.0, -lead))),
               threading.Thread(target=run, args=(1, second, max(0.0, lead)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a round did not finish within 60 s"
    if errors:
        raise errors[0]
    return results


def run_rounds(
    rounds: int,
    per_study: int,
    *,
    store: Callable[[bytes], str],
    delete: Callable[[str], None],
    resend: Callable[[list[bytes]], list[str]],
    indexed: Callable[[str], set[str]],
    retrieve: Retrieve,
    seed: int = 9,
    spread: tuple[float, float] = (-0.5, 1.5),
) -> Tally:
    """``store`` stores an object and answers the SHA-256 (hex) of what the archive keeps for it, ``resend``
    sends objects again and answers one of STORED, ACKNOWLEDGED, UNAVAILABLE per object, ``delete`` deletes a
    study, ``indexed`` lists the SOP Instance UIDs the index answers for, ``retrieve`` reads one back.
    ``spread``: the re-sender's head start, in recent delete durations, is drawn from this range (negative: the
    deleter starts later); a front end that takes longer to reach ingest than DELETE to commit needs more."""
    rng = random.Random(seed)
    tally = Tally()
    durations: list[float] = [0.01]

    def timed_delete(study: str) -> None:
        began = time.monotonic()
        delete(study)
        durations.append(time.monotonic() - began)

    for n in range(rounds):
        rnd = new_round(n, per_study)
        digests = {sop: store(data) for sop, data in rnd.objects}
        order = list(reversed(rnd.objects))
        lead = rng.uniform(*spread) * sum(durations[-10:]) / len(durations[-10:])
        _, sent = together(partial(timed_delete, rnd.study), partial(resend, [data for _, data in order]),
                           lead=lead)
        answers = dict(zip([sop for sop, _ in order], cast("list[str]", sent), strict=True))
        tally.rounds += 1
        tally.unavailable += sum(1 for a in answers.values() if a == UNAVAILABLE)
        answered = indexed(rnd.study)
        for sop, _ in rnd.objects:
            if sop not in answered:
                tally.gone += 1
                if answers[sop] == STORED:
                    tally.losses.append(f"round {n}: acknowledged as a new store, not indexed")
                continue
            tally.indexed += 1
            got = retrieve(rnd.study, rnd.series, sop)
            if got is None:
                tally.losses.append(f"round {n}: indexed, blob missing")
            elif hashlib.sha256(got).hexdigest() != digests[sop]:
                tally.losses.append(f"round {n}: indexed, bytes differ")
    return tally

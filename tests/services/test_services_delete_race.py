"""Issue #9, defect 1: a delete racing a re-send of the same bytes must never lose an acknowledged object.

Through the services directly (fast enough for many rounds), on the backends the environment selects
(``DV_TEST_INDEX_URL`` / ``DV_TEST_STORAGE_URL``: SQLite or PostgreSQL, a folder or S3). Before the claim
protocol, these rounds lost objects on every backend pair (e.g. 40 of 100 rounds of 4 instances on SQLite + a
folder, 17 of 100 on PostgreSQL + S3): the index answered, the blob was gone. The front-end variants are in
tests/dicomweb/test_dw_delete_race.py (STOW-RS) and tests/dimse/test_dimse_delete_race.py (C-STORE).
"""

from __future__ import annotations

import io
from functools import partial

from dicomvault.bootstrap import Archive
from dicomvault.domain.errors import IntegrityFailure, NotFound, Unavailable
from dicomvault.domain.records import StoreOutcome
from dicomvault.services.fixity import FixityService
from tests.race_rounds import ACKNOWLEDGED, STORED, UNAVAILABLE, new_round, run_rounds, together

#: Rounds × instances: ~6 s on SQLite + a folder, ~20 s on PostgreSQL + S3 (moto), on two busy shared cores.
ROUNDS = 100
PER_STUDY = 3


def _ingest(archive: Archive, data: bytes) -> str:
    try:
        outcome = archive.ingest.ingest(io.BytesIO(data), source="race").outcome
    except Unavailable:
        return UNAVAILABLE
    return STORED if outcome == StoreOutcome.STORED else ACKNOWLEDGED


def _retrieve(archive: Archive, sop: str) -> bytes | None:
    records = archive.index.instances(sop_uids=[sop])
    if not records:
        return None
    try:
        return b"".join(archive.retrieve.iter_bytes(records[0], verify=True))
    except (NotFound, IntegrityFailure):
        return None


def test_delete_racing_a_resend_loses_nothing(archive: Archive) -> None:
    def delete(study: str) -> None:
        try:
            archive.lifecycle.delete(study)
        except NotFound:
            pass

    def store(data: bytes) -> str:
        return archive.ingest.ingest(io.BytesIO(data)).blob.sha256

    tally = run_rounds(
        ROUNDS, PER_STUDY,
        store=store,
        delete=delete,
        resend=lambda datas: [_ingest(archive, d) for d in datas],
        indexed=lambda study: {r.sop_uid for r in archive.index.instances(study_uid=study)},
        retrieve=lambda _st, _se, sop: _retrieve(archive, sop),
    )
    assert tally.losses == [], f"{len(tally.losses)} losses in {tally.rounds} rounds: {tally.losses[:5]}"
    assert tally.indexed > 0 and tally.gone > 0, f"both orders of delete and re-send must occur: {tally}"
    assert tally.unavailable == 0, "live deleters finish within the wait"


def test_orphan_repair_racing_a_resend_loses_nothing(archive: Archive) -> None:
    """``verify --repair`` deleting orphans while identical bytes arrive again (a modality re-sending what a
    crash left unindexed). On PostgreSQL this is the claim that must wait for stores in flight."""
    fixity = FixityService(archive.index, archive.blobs, archive.remover)
    losses: list[str] = []
    acknowledged = 0
    for n in range(ROUNDS // 3):
        rnd = new_round(1000 + n, 1)
        [(sop, data)] = rnd.objects
        orphan = archive.blobs.put(io.BytesIO(data)).info.key
        _, answer = together(partial(fixity.remover.remove, [orphan], unreferenced_found=True),
                             partial(_ingest, archive, data))
        if answer != UNAVAILABLE:
            acknowledged += 1
            got = _retrieve(archive, sop)
            if got != data:
                losses.append(f"round {n}: acknowledged, blob {'missing' if got is None else 'different'}")
    assert losses == [], losses[:5]
    assert acknowledged == ROUNDS // 3, "repair claims are short: a re-send never waits past its bound"

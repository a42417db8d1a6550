"""The cached default QIDO-RS answer of each study (table ``study_qido``), kept in step with the study.

A study search that returns hundreds of studies used to build each DICOM JSON object in Python for every request
(~25 µs per row, most of the request). The object of the default return keys depends only on the study row and
its patient row, and those change only when an instance of the study is stored or removed, so it is rendered
once there, in the same transaction (``refresh``), and a query concatenates the stored texts.

An answer counts as valid only while the ``num_instances`` it was built for equals the study's: a node running
an older version (during a rolling upgrade) changes the counters without rewriting the answer, and that study is
then answered from its columns until its next change. Rendering goes through ``domain.dicom_json`` and orjson,
exactly like the query service's own path, so both give byte-identical objects (tests check it). Answers are
removed with their study (ON DELETE CASCADE).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index.tables import patients, studies, study_qido
from dicomvault.domain.dicom_json import STUDY_DEFAULT_PLAN, default_object
from dicomvault.domain.tags import Level

#: Study and patient columns the answer is made of, labelled by keyword like the query engine's rows.
_COLUMNS = [
    (patients if attr.level == Level.PATIENT else studies).c[attr.column].label(kw) for kw, attr in STUDY_DEFAULT_PLAN
]
_JOINED = studies.join(patients, studies.c.patient_fk == patients.c.id)
SELECT_ONE = (select(studies.c.id.label("_id"), *_COLUMNS).select_from(_JOINED)
               .where(studies.c.id == bindparam("b_id")))
BACKFILL_BATCH = 1000


def _upsert(dialect: str) -> Any:
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(study_qido).values(
        study_fk=bindparam("b_id"), answer=bindparam("b_json"), num_instances=bindparam("b_count"))
    return insert.on_conflict_do_update(
        index_elements=["study_fk"],
        set_={"answer": insert.excluded.answer, "num_instances": insert.excluded.num_instances},
    )


_UPSERT = {name: _upsert(name) for name in ("sqlite", "postgresql")}


def render(row: Mapping[Any, Any]) -> str:
    """The compact DICOM JSON text of a study's default answer, from its row (keyword → value)."""
    return orjson.dumps(default_object(Level.STUDY, row)).decode("utf-8")


def _params(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {"b_id": row["_id"], "b_json": render(row), "b_count": row["NumberOfStudyRelatedInstances"]}


def refresh(conn: Connection, study_ids: Iterable[int]) -> None:
    """Re-render the answers of ``study_ids`` inside the caller's transaction (after its counter updates, which
    hold the study row's lock on PostgreSQL, so two writers to one study cannot leave an older count behind).
    Ids of studies that no longer exist are skipped (their answer went with them)."""
    upsert = _UPSERT[conn.dialect.name]
    for study_id in study_ids:
        row = conn.execute(SELECT_ONE, {"b_id": study_id}).mappings().first()
        if row is not None:
            conn.execute(upsert, _params(row))


def backfill(conn: Connection) -> int:
    """Render the answer of every study that has none (migration 0004), in id-ordered batches; returns how many
    were written."""
    upsert = _UPSERT[conn.dialect.name]
    done, after = 0, 0
    while True:
        rows = conn.execute(
            select(studies.c.id.label("_id"), *_COLUMNS)
            .select_from(_JOINED.outerjoin(study_qido, study_qido.c.study_fk == studies.c.id))
            .where(studies.c.id > after, study_qido.c.study_fk.is_(None))
            .order_by(studies.c.id).limit(BACKFILL_BATCH)
        ).mappings().all()
        if not rows:
            return done
        conn.execute(upsert, [_params(r) for r in rows])
        done += len(rows)
        after = int(rows[-1]["_id"])


def valid(answer: str | None, built_for: int | None, num_instances: int) -> bool:
    """Whether a stored answer describes the study as it is now (see the module docstring)."""
    return answer is not None and built_for == num_instances

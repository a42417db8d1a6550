"""The index write of a new instance in plain DBAPI statements: the hot path of every C-STORE, STOW-RS and import.

Why not SQLAlchemy Core here: each Core ``execute`` costs 50-150 µs of Python (cache key, parameter processing,
result set set-up) before the database does anything, and storing a new instance takes 9-16 statements (the
instance, its parents, three counter updates, the study's cached QIDO answer, the blob's copy record, the
blob-removal check). Measured on
one-instance studies of a realistic CT header: ~3 ms of CPU per instance in Core against ~0.3 ms here. SQL text
is written once per dialect (``:name`` parameters, turned into psycopg's ``%(name)s`` for PostgreSQL) and run on
the driver connection underneath the caller's SQLAlchemy transaction, so savepoints, group commit and the retry
policy are unchanged: driver errors are re-raised as SQLAlchemy's ``DBAPIError`` subclasses, which is what
``run_with_retries`` and ``group_commit`` classify.

Only the common case runs here: no instance under this SOP Instance UID yet. Anything else (a duplicate, a
replacement) goes back to ``SqlIndexRepository``'s Core path, which stays the reference: the tests run the same
stores through both and compare the index they leave. The blob-removal check stays last, after the instance row
is written (``services.lifecycle`` explains why the order matters); only when a removal is recorded for the key
does the caller hand the case to ``RemovalStatements.check_store``.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from dicomvault.adapters.index import study_answers
from dicomvault.adapters.index.tables import instances, patients, series, studies
from dicomvault.domain.records import InstanceEntry

#: Columns written from the entry (everything the Core path writes, in table order).
_PATIENT_COLS = [c.name for c in patients.columns if c.name != "id"]
_STUDY_COLS = [c.name for c in studies.columns if c.name != "id"]
_SERIES_COLS = [c.name for c in series.columns if c.name != "id"]
_INSTANCE_COLS = [c.name for c in instances.columns if c.name != "id"]


def _insert_sql(table: str, cols: list[str], key: str, returning: bool = True) -> str:
    names = ", ".join(f'"{c}"' for c in cols)
    values = ", ".join(f":{c}" for c in cols)
    conflict = f' ON CONFLICT ("{key}") DO NOTHING' if key else ""
    return f'INSERT INTO {table} ({names}) VALUES ({values}){conflict}' + (" RETURNING id" if returning else "")


_SQL = {
    "existing": "SELECT id FROM instances WHERE sop_uid = :sop",
    "series": "SELECT s.id, s.study_fk, st.patient_fk FROM series s JOIN studies st ON s.study_fk = st.id "
              "WHERE s.series_uid = :uid",
    "patient_id": "SELECT id FROM patients WHERE patient_key = :patient_key",
    "study_ids": "SELECT id, patient_fk FROM studies WHERE study_uid = :study_uid",
    "series_ids": "SELECT s.id, s.study_fk, st.patient_fk FROM series s JOIN studies st ON s.study_fk = st.id "
                  "WHERE s.series_uid = :series_uid",
    "ins_patient": _insert_sql("patients", _PATIENT_COLS, "patient_key"),
    "ins_study": _insert_sql("studies", _STUDY_COLS, "study_uid"),
    "ins_series": _insert_sql("series", _SERIES_COLS, "series_uid"),
    "ins_instance": _insert_sql("instances", _INSTANCE_COLS, "", returning=False),
    "upd_series": "UPDATE series SET num_instances = num_instances + 1 WHERE id = :id",
    "upd_study": "UPDATE studies SET num_instances = num_instances + 1, size_bytes = size_bytes + :size, "
                 "num_series = num_series + :new_series, updated_at = :now WHERE id = :id",
    "upd_patient": "UPDATE patients SET num_instances = num_instances + 1, num_series = num_series + :new_series, "
                   "num_studies = num_studies + :new_study WHERE id = :id",
    "modalities": "SELECT modality FROM series WHERE study_fk = :id",
    "set_modalities": "UPDATE studies SET modalities_in_study = :value WHERE id = :id",
    "removal": "SELECT 1 FROM blob_removals WHERE key = :key",
    # The copy of the blob on the store the put wrote to (``adapters.index.tiers.record_ingest_copy``, in one
    # statement): always when the put wrote it, else only if the key has no copy row at all. The WHERE also keeps
    # SQLite's parser from reading ON CONFLICT as a join constraint of INSERT … SELECT.
    "copy": "INSERT INTO blob_copies (key, store, verified_at) SELECT {key}, :store, {at} "
            "WHERE :created OR NOT EXISTS (SELECT 1 FROM blob_copies WHERE key = {key}) ON CONFLICT DO NOTHING",
    "answer_upsert": "INSERT INTO study_qido (study_fk, answer, num_instances) VALUES (:id, :answer, :count) "
                     "ON CONFLICT (study_fk) DO UPDATE SET answer = excluded.answer, "
                     "num_instances = excluded.num_instances",
}
#: Row locks the Core path takes on PostgreSQL (two nodes storing the same SOP Instance UID or the same blob key):
#: the same here.
_FOR_UPDATE = {"existing", "removal"}
_PARAM = re.compile(r":(\w+)")


def _dialect_sql(dialect: str) -> dict[str, str]:
    out = {}
    for name, sql in _SQL.items():
        # PostgreSQL types a bare parameter of a SELECT list as text, which a timestamptz column refuses and which
        # clashes with the varchar it deduces for the same parameter compared with a column: both typed here.
        for param, cast in (("key", "VARCHAR"), ("at", "TIMESTAMP WITH TIME ZONE")):
            typed = f"CAST(:{param} AS {cast})" if dialect == "postgresql" else f":{param}"
            sql = sql.replace("{" + param + "}", typed)
        if dialect == "postgresql":
            sql = _PARAM.sub(r"%(\1)s", sql)
            if name in _FOR_UPDATE:
                sql += " FOR UPDATE"
        out[name] = sql
    return out


class HotStore:
    """Stores a new instance with plain statements; ``store`` returns None when the case is not the common one
    (the caller then runs its Core path in the same transaction, which has changed nothing yet)."""

    def __init__(self, dialect: str) -> None:
        self._dialect_name = dialect
        self._sql = _dialect_sql(dialect)
        sa_dialect = (postgresql if dialect == "postgresql" else sqlite).dialect()
        self._time = instances.c.stored_at.type.dialect_impl(sa_dialect).bind_processor(sa_dialect)
        answer_select = study_answers.SELECT_ONE.compile(dialect=sa_dialect)
        self._answer_sql = str(answer_select)
        self._answer_positional = answer_select.positiontup  # qmark (SQLite): parameter order
        self._answer_id = "b_id"

    # -- statements -------------------------------------------------------------------------------------------

    @staticmethod
    def _execute(cursor: Any, dbapi_error: type[Exception], sql: str, params: Any) -> Any:
        """Run one statement; a driver error becomes SQLAlchemy's matching ``DBAPIError`` (what the retry policy
        and group commit classify)."""
        try:
            cursor.execute(sql, params)
        except dbapi_error as exc:
            raise DBAPIError.instance(sql, params, exc, dbapi_error) from exc
        return cursor

    def _run(self, cursor: Any, dbapi_error: type[Exception], name: str, params: dict[str, Any]) -> Any:
        return self._execute(cursor, dbapi_error, self._sql[name], params)

    def _one(self, cursor: Any, dbapi_error: type[Exception], name: str, params: dict[str, Any]) -> Any:
        return self._run(cursor, dbapi_error, name, params).fetchone()

    # -- the store --------------------------------------------------------------------------------------------

    def store(self, conn: Connection, entry: InstanceEntry, now: Any, patient_key: str,
              no_nul: Any) -> tuple[int, bool] | None:
        """Insert ``entry`` (a new SOP Instance UID) and bring counters, the study's modalities and its cached
        answer up to date; returns (study id, whether a blob removal is recorded for its key), or None (nothing
        written) when the Core path must handle the store."""
        raw: Any = conn.connection.driver_connection
        dbapi_error: type[Exception] = conn.dialect.loaded_dbapi.Error
        cur = raw.cursor()
        try:
            if self._one(cur, dbapi_error, "existing", {"sop": entry.instance["sop_uid"]}) is not None:
                return None
            stamp = self._time(now) if self._time is not None else now
            patient_id, study_id, series_id, new_study, new_series = self._parents(
                cur, dbapi_error, entry, stamp, patient_key, no_nul)
            row: dict[str, Any] = dict.fromkeys(_INSTANCE_COLS)
            row.update(no_nul(entry.instance))
            row.update(
                series_fk=series_id, blob_key=entry.blob.key, blob_size=entry.blob.size,
                blob_sha256=entry.blob.sha256, metadata=entry.metadata_json,
                frame_index=entry.frame_index.encode() if entry.frame_index else None,
                source=entry.source[:128] if entry.source else None, stored_at=stamp,
            )
            self._run(cur, dbapi_error, "ins_instance", row)
            self._run(cur, dbapi_error, "upd_series", {"id": series_id})
            self._run(cur, dbapi_error, "upd_study", {"id": study_id, "size": entry.blob.size,
                                                      "new_series": int(new_series), "now": stamp})
            self._run(cur, dbapi_error, "upd_patient", {"id": patient_id, "new_series": int(new_series),
                                                        "new_study": int(new_study)})
            if new_series:
                self._modalities(cur, dbapi_error, study_id)
            self._answer(cur, dbapi_error, study_id)
            self._run(cur, dbapi_error, "copy", {"key": entry.blob.key, "store": entry.store,
                                                 "at": stamp if entry.blob_created else None,
                                                 "created": bool(entry.blob_created)})
            removal = self._one(cur, dbapi_error, "removal", {"key": entry.blob.key}) is not None
            return study_id, removal
        finally:
            cur.close()

    def _parents(self, cur: Any, err: type[Exception], entry: InstanceEntry, stamp: Any, patient_key: str,
                 no_nul: Any) -> tuple[int, int, int, bool, bool]:
        """As ``SqlIndexRepository._parents``: one SELECT when the series exists (instance 2..N)."""
        found = self._one(cur, err, "series", {"uid": entry.series["series_uid"]})
        if found is not None:
            return int(found[2]), int(found[1]), int(found[0]), False, False
        p: dict[str, Any] = dict.fromkeys(_PATIENT_COLS)
        p.update(no_nul(entry.patient))
        p.update(patient_key=patient_key, num_studies=0, num_series=0, num_instances=0)
        got = self._one(cur, err, "ins_patient", p)
        patient_id = int(got[0]) if got is not None else int(self._one(cur, err, "patient_id", p)[0])
        st: dict[str, Any] = dict.fromkeys(_STUDY_COLS)
        st.update(no_nul(entry.study))
        st.update(patient_fk=patient_id, num_series=0, num_instances=0, size_bytes=0, modalities_in_study="",
                  updated_at=stamp)
        got = self._one(cur, err, "ins_study", st)
        new_study = got is not None
        if new_study:
            study_id = int(got[0])
        else:  # the study may exist under another patient row: counters follow the study's owner
            existing = self._one(cur, err, "study_ids", st)
            study_id, patient_id = int(existing[0]), int(existing[1])
        se: dict[str, Any] = dict.fromkeys(_SERIES_COLS)
        se.update(no_nul(entry.series))
        se.update(study_fk=study_id, num_instances=0)
        got = self._one(cur, err, "ins_series", se)
        if got is not None:
            return patient_id, study_id, int(got[0]), new_study, True
        existing = self._one(cur, err, "series_ids", se)  # inserted meanwhile by another writer
        return int(existing[2]), int(existing[1]), int(existing[0]), new_study, False

    def _modalities(self, cur: Any, err: type[Exception], study_id: int) -> None:
        mods = sorted({m for (m,) in self._run(cur, err, "modalities", {"id": study_id}).fetchall() if m})
        value = ("\\" + "\\".join(mods) + "\\") if mods else ""
        self._run(cur, err, "set_modalities", {"id": study_id, "value": value})

    def _answer(self, cur: Any, err: type[Exception], study_id: int) -> None:
        """``study_answers.refresh`` for one study, on the same statement text."""
        params: Any = {self._answer_id: study_id}
        if self._answer_positional:
            params = tuple(params[name] for name in self._answer_positional)
        self._execute(cur, err, self._answer_sql, params)
        names = [d[0] for d in cur.description]
        found = cur.fetchone()
        if found is None:
            return
        row = dict(zip(names, found, strict=True))
        self._run(cur, err, "answer_upsert", {"id": study_id, "answer": study_answers.render(row),
                                              "count": row["NumberOfStudyRelatedInstances"]})

"""The index schema (SQLAlchemy Core), shared by every SQL dialect.

Person-name and time columns have a shadow ``<column>_n`` holding the normalised form used for matching
(case/accent-folded names, zero-padded times) while the original column keeps the value as received.
Counters (NumberOf…Related…) and ModalitiesInStudy are maintained in the ingest transaction so that queries
never aggregate.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BigInteger primary keys become INTEGER on SQLite (rowid alias) and BIGINT on PostgreSQL.
Id = BigInteger().with_variant(Integer, "sqlite")

patients = Table(
    "patients",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("patient_key", String(200), nullable=False, unique=True),  # PatientID + NUL + Issuer
    Column("patient_id", String(64)),
    Column("issuer_of_patient_id", String(64)),
    Column("patient_name", String(324)),
    Column("patient_name_n", String(324)),
    Column("patient_birth_date", String(16)),
    Column("patient_sex", String(16)),
    Column("num_studies", Integer, nullable=False, default=0),
    Column("num_series", Integer, nullable=False, default=0),
    Column("num_instances", Integer, nullable=False, default=0),
    Index("ix_patients_patient_id", "patient_id"),
    Index("ix_patients_patient_name_n", "patient_name_n"),
)

studies = Table(
    "studies",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("study_uid", String(64), nullable=False, unique=True),
    Column("patient_fk", Id, ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
    Column("study_date", String(16)),
    Column("study_time", String(32)),
    Column("study_time_n", String(16)),
    Column("accession_number", String(64)),
    Column("study_id", String(64)),
    Column("referring_physician_name", String(324)),
    Column("referring_physician_name_n", String(324)),
    Column("study_description", String(256)),
    Column("modalities_in_study", String(256), nullable=False, default=""),  # "\CT\MR\" for LIKE matching
    Column("num_series", Integer, nullable=False, default=0),
    Column("num_instances", Integer, nullable=False, default=0),
    Column("size_bytes", BigInteger, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True)),
    #: when the study was last retrieved, written in batches by ``services.tiering`` (``note_study_reads``): the
    #: ``not_read_days`` lifecycle condition counts from it (from ``updated_at`` when NULL: never read). Not touched
    #: by ingest, and not part of ``metadata_version``: a read changes no answer.
    Column("last_read_at", DateTime(timezone=True)),
    Index("ix_studies_patient_fk", "patient_fk"),
    Index("ix_studies_study_date", "study_date"),
    Index("ix_studies_accession_number", "accession_number"),
)

#: Each study's default QIDO-RS answer (``domain.dicom_json.default_object``) as compact DICOM JSON, rewritten in
#: every transaction that changes the study (``adapters.index.study_answers``), with the num_instances it was built
#: for: an answer whose count differs from the study's (written by a node that predates this table) or that is
#: missing is ignored, and the study is answered from its columns. A table of its own (not a column of
#: ``studies``) so that searches scanning studies do not read ~1 KB more per row.
study_qido = Table(
    "study_qido",
    metadata,
    Column("study_fk", Id, ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True, autoincrement=False),
    Column("answer", Text, nullable=False),
    Column("num_instances", Integer, nullable=False),
)

series = Table(
    "series",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("series_uid", String(64), nullable=False, unique=True),
    Column("study_fk", Id, ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
    Column("modality", String(16)),
    Column("series_number", Integer),
    Column("series_description", String(256)),
    Column("body_part_examined", String(64)),
    Column("series_date", String(16)),
    Column("series_time", String(32)),
    Column("series_time_n", String(16)),
    Column("pps_start_date", String(16)),
    Column("pps_start_time", String(32)),
    Column("pps_start_time_n", String(16)),
    Column("num_instances", Integer, nullable=False, default=0),
    Index("ix_series_study_fk", "study_fk"),
    Index("ix_series_modality", "modality"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("sop_uid", String(64), nullable=False, unique=True),
    Column("series_fk", Id, ForeignKey("series.id", ondelete="CASCADE"), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("number_of_frames", Integer),
    Column("bits_allocated", Integer),
    Column("content_date", String(16)),
    Column("content_time", String(32)),
    Column("content_time_n", String(16)),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("blob_key", String(128), nullable=False),
    Column("blob_size", BigInteger, nullable=False),
    Column("blob_sha256", String(64), nullable=False),
    Column("metadata", Text, nullable=False),
    Column("frame_index", Text),
    #: why the pixel data cannot be decoded (stored by the accept-and-flag policy); NULL for sound objects
    Column("pixel_problem", String(128)),
    Column("source", String(128)),
    Column("stored_at", DateTime(timezone=True), nullable=False),
    Index("ix_instances_series_fk_number", "series_fk", "instance_number"),
    Index("ix_instances_blob_key", "blob_key"),
    #: the storage dashboard's figures by time of receipt, source and series from the index alone (migration 0017)
    Index("ix_instances_stored_at_size", "stored_at", "blob_size"),
    Index("ix_instances_source_series_size", "source", "series_fk", "blob_size"),
)

#: Prior content of an instance kept by the ``keep-both`` duplicate policy.
instance_versions = Table(
    "instance_versions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("sop_uid", String(64), nullable=False),
    Column("blob_key", String(128), nullable=False),
    Column("blob_size", BigInteger, nullable=False),
    Column("blob_sha256", String(64), nullable=False),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("superseded_at", DateTime(timezone=True), nullable=False),
    Index("ix_instance_versions_sop_uid", "sop_uid"),
    Index("ix_instance_versions_blob_key", "blob_key"),
    UniqueConstraint("sop_uid", "blob_key", name="uq_instance_versions_sop_blob"),
)

#: Blob removals in progress and recently finished: the serialization point between deleting a content-addressed
#: blob and an ingest that found the same bytes already stored (``adapters.index.removals``). A row is *pending*
#: (``claim_id`` NULL: released by a delete or a replace in the transaction that removed the last reference),
#: *claimed* (a deleter may delete the blob now; ``removed_at`` NULL) or *finished* (``removed_at`` set: kept as a
#: tombstone for ``services.lifecycle.TOMBSTONE_RETENTION`` so that an ingest whose put found the blob just
#: before it was deleted still learns of it).
blob_removals = Table(
    "blob_removals",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("released_at", DateTime(timezone=True), nullable=False),
    Column("claimed_at", DateTime(timezone=True)),
    Column("claim_id", String(32)),
    Column("removed_at", DateTime(timezone=True)),
)

#: Verified copies of blobs on named stores (``domain.tiers``, ``adapters.index.tiers``): a row means the store
#: holds the bytes of ``key`` and their SHA-256 was verified there (by ingest while writing, or by the tier move
#: that re-read them; NULL ``verified_at``: recorded by migration 0008 for blobs stored before, or by an ingest
#: whose put found the bytes already there). Every referenced blob has at least one row; a tier move adds the
#: target's row before dropping the source's, and ``drop_blob_copy`` never drops the last one. Keyed by blob key,
#: not by instance: content-addressed keys are shared by an instance and nothing else, and removal works per key.
#: The (store, key) index serves per-store walks in key order (fixity, usage) without sorting a whole store.
blob_copies = Table(
    "blob_copies",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("store", String(32), primary_key=True),
    Column("verified_at", DateTime(timezone=True)),
    Index("ix_blob_copies_store", "store", "key"),
)

#: Soft-deleted blobs (``adapters.index.trash``, ``services.trash``): a soft delete removes the instance rows as a
#: delete does, but the blobs it releases come here instead of ``blob_removals``, in the same transaction. A key
#: in ``trash`` counts as referenced wherever the index decides whether a blob is (blob removal claims, copies,
#: fixity walks), so nothing deletes it and fixity keeps checking its copies until the purge, which deletes the row
#: and records the key as a pending removal in one transaction. One row per key (content-addressed: a key is one
#: object); ``superseded`` marks a prior version (``instance_versions``) of its SOP Instance UID.
trash = Table(
    "trash",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("sop_uid", String(64), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("blob_size", BigInteger, nullable=False),
    Column("blob_sha256", String(64), nullable=False),
    Column("superseded", Boolean, nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=False),
    Column("purge_after", DateTime(timezone=True), nullable=False),
    Column("reason", String(256)),
    Column("deleted_by", String(256)),
    Index("ix_trash_purge_after", "purge_after"),
    Index("ix_trash_study_uid", "study_uid"),
)

#: Every deletion, by whom or by which rule (issue #11 item 6): one row per soft delete, restore, purge or
#: immediate delete, written in the transaction that made the change. ``sop_uid`` / ``series_uid`` are the level
#: addressed (NULL: the whole study or series); ``instances`` how many instances the change touched.
deletion_log = Table(
    "deletion_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64)),
    Column("sop_uid", String(64)),
    Column("instances", Integer, nullable=False),
    Column("reason", String(256)),
    Column("by", String(256)),
    Column("action", String(16), nullable=False),
    Index("ix_deletion_log_study_uid", "study_uid"),
    Index("ix_deletion_log_at", "at"),
)

#: SOP Instance UIDs rejected by IHE IOCM rejection notes (``services.iocm``), kept so that an instance arriving
#: after the note that rejects it is hidden too. One row per instance; a later note replaces the code.
rejected_instances = Table(
    "rejected_instances",
    metadata,
    Column("sop_uid", String(64), primary_key=True),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("code", String(16), nullable=False),
    Column("note_uid", String(64), nullable=False),
    Column("rejected_at", DateTime(timezone=True), nullable=False),
)

#: Blobs that hold a losslessly compressed form of an object received in a native syntax (issue #11 item 4,
#: ``services.compression``): keyed by the compressed blob's key, so the recipe follows the bytes wherever an
#: instance row points at them (a trash restore re-ingests the compressed object and finds its recipe again). The
#: original is rebuilt byte for byte as ``head`` (the original's bytes up to its Pixel Data value, zlib), every
#: frame decoded to the original's bit patterns (``layout``: ``dicom.lossless.FrameLayout`` as JSON), zero bytes up
#: to ``pixel_length`` (the value's length, its pad byte included), and ``tail`` (the bytes after the Pixel Data
#: value, zlib); its SHA-256 must be ``original_sha256``. Deleted when the compressed blob's removal finishes.
blob_originals = Table(
    "blob_originals",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("original_sha256", String(64), nullable=False),
    Column("original_size", BigInteger, nullable=False),
    Column("original_syntax", String(64), nullable=False),
    Column("pixel_length", BigInteger, nullable=False),
    Column("layout", Text, nullable=False),
    Column("head", LargeBinary, nullable=False),
    Column("tail", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: Blobs the compression policy looked at and left as they are, with the reason (already compressed, float pixel
#: data, an odd layout …), so that planning does not select them again; keyed by blob key like the copies.
compression_skips = Table(
    "compression_skips",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("reason", String(256), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

#: Remote systems registered in the index (issue #12, ``adapters.index.peers``): every node of a cluster sees the
#: same list. Lists are JSON text (permissions, allowed source networks, preferred transfer syntaxes).
peers = Table(
    "peers",
    metadata,
    Column("aet", String(16), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("permissions", String(128), nullable=False),
    Column("move_destination", Boolean, nullable=False),
    Column("hosts", Text, nullable=False),
    Column("tls", Boolean, nullable=False),
    Column("dicomweb_url", String(1024)),
    Column("dicomweb_token", String(4096)),
    Column("transfer_syntaxes", Text, nullable=False),
    Column("description", String(256)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

#: Migration from a legacy PACS (issue #12 item 5, ``adapters.index.migration_state``): where each study of a peer
#: stands (queued, done, skipped, failed), with the peer's expected instance count, what was received and the last
#: error, so that a migration killed midway continues where it stopped and never fetches a verified study again.
migration_studies = Table(
    "migration_studies",
    metadata,
    Column("peer", String(16), primary_key=True),
    Column("study_uid", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("study_date", String(8), nullable=False),
    Column("expected", Integer),
    Column("received", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("last_error", String(1024)),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_migration_studies_peer_state", "peer", "state"),
)

#: What routing sent where (issue #12 item 3, ``adapters.index.route_deliveries``): one row per (destination, SOP
#: Instance UID), so an instance a destination has (``sent``, ``confirmed``) is never sent to it again whichever
#: route selects it. ``claimed_by`` is the delivery job sending a ``sending`` row; ``commitment_uid`` the storage
#: commitment transaction that will confirm a ``sent`` row.
route_deliveries = Table(
    "route_deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("destination", String(16), nullable=False),
    Column("sop_uid", String(64), nullable=False),
    Column("study_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64), nullable=False),
    Column("route", String(64), nullable=False),
    Column("via", String(16), nullable=False),
    Column("transfer_syntax", String(64)),
    Column("commitment", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(1024)),
    Column("claimed_by", String(64)),
    Column("commitment_uid", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    Column("confirmed_at", DateTime(timezone=True)),
    UniqueConstraint("destination", "sop_uid", name="uq_route_deliveries_destination_sop_uid"),
    Index("ix_route_deliveries_destination_study", "destination", "study_uid", "state"),
    Index("ix_route_deliveries_state_updated", "state", "updated_at"),
    Index("ix_route_deliveries_commitment_uid", "commitment_uid"),
)

#: Studies a route on stable studies waits for, per destination: ``due_at`` is pushed back by every instance the
#: route selects, and the routing scan releases the study's ``waiting`` deliveries once it has passed.
route_stable = Table(
    "route_stable",
    metadata,
    Column("destination", String(16), primary_key=True),
    Column("study_uid", String(64), primary_key=True),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Index("ix_route_stable_due_at", "due_at"),
)

LEVEL_TABLES = {"PATIENT": patients, "STUDY": studies, "SERIES": series, "IMAGE": instances}

#: Instances joined to their series and study along the foreign keys: the FROM clause of every read and write that
#: finds instances by study or series UID, or needs an instance's parents (``.join(patients, …)`` adds the patient).
#: One object, so that every statement states the same join and SQLAlchemy compiles it once per statement shape.
INSTANCE_SERIES_STUDY = instances.join(series, instances.c.series_fk == series.c.id).join(
    studies, series.c.study_fk == studies.c.id)

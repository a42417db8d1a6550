"""Configuration of storage tiers: named stores (``[stores.<name>]``) and lifecycle rules (``[[lifecycle]]``), which
move, copy or (retention) delete studies.

A few lines of TOML give an archive a hot disk and a cloud archive (docs/storage-tiers.md)::

    ingest_store = "hot"
    [stores.hot]
    url = "file:///fast-disk/blobs"
    [stores.cold]
    url = "s3://archive/dv?endpoint=…&region=…&storage_class=GLACIER_IR"
    [[lifecycle]]
    name = "CT to the cloud after 30 days"
    when = { study_age_days = 30, modality = "CT" }
    action = { move_to = "cold" }
    [[lifecycle]]
    name = "delete after 10 years"
    when = { study_age_days = 3650 }
    action = { delete = true, grace_days = 30 }

Every model forbids unknown keys: a misspelt condition must stop the start-up, never widen a rule into "every
study". Whether a rule's stores exist is checked by ``Settings`` (it knows every store); the message names the
rule, and ``config_errors`` adds the line of the TOML file.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dicomvault.domain.tiers import CopyTarget, StudyCondition

#: What a store may be called (it is written in every copy row of the index: short, no spaces).
STORE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _as_tuple(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


class StoreConfig(BaseModel):
    """One named blob store, ``[stores.<name>]``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="file:///path or s3://bucket/prefix?endpoint=…&region=…&storage_class=…")
    read_priority: int | None = Field(
        None, description="Stores are read in ascending priority (default: 0 for file://, 10 for s3://, 20 for "
        "an archive storage class), so a study with a hot and a cold copy is read from the hot one.",
    )
    promote_on_read: bool = Field(
        False, description="Reading a study whose blobs are only here adds a copy on the ingest store (a job).",
    )
    recall_days: int = Field(7, ge=1, le=365, description="Days a recalled (restored) archive object stays readable.")
    recall_tier: Literal["Expedited", "Standard", "Bulk"] = Field(
        "Standard", description="S3 restore tier of a recall (speed against cost).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        scheme = value.split(":", 1)[0] if ":" in value else ""
        if scheme not in ("file", "s3", "memory"):
            raise ValueError(f"store URL {value!r} must start with file://, s3:// or memory://")
        return value


class RuleWhen(BaseModel):
    """The conditions of a lifecycle rule; every condition given must hold. At least one is required."""

    model_config = ConfigDict(extra="forbid")

    study_age_days: int | None = Field(None, ge=0, description="StudyDate at least this many days ago.")
    not_read_days: int | None = Field(
        None, ge=0, description="Not read (retrieved) for this many days (never read: since last stored).")
    modality: str | list[str] | None = Field(None, description="Any of these in ModalitiesInStudy.")
    source: str | list[str] | None = Field(None, description="Received from this calling AE title / STOW client.")
    sop_class: str | list[str] | None = Field(None, description="Holds an instance of one of these SOP classes.")
    min_study_bytes: int | None = Field(None, ge=0, description="Study at least this large.")
    max_study_bytes: int | None = Field(None, ge=0, description="Study at most this large.")

    @model_validator(mode="after")
    def _check(self) -> RuleWhen:
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("a rule needs at least one condition (for every study say min_study_bytes = 0)")
        if (self.min_study_bytes is not None and self.max_study_bytes is not None
                and self.min_study_bytes > self.max_study_bytes):
            raise ValueError("min_study_bytes is larger than max_study_bytes: the rule can never apply")
        for name in ("modality", "source", "sop_class"):
            values = _as_tuple(getattr(self, name))
            if any(not v.strip() for v in values):
                raise ValueError(f"{name} must not be empty")
        return self

    def condition(self) -> StudyCondition:
        return StudyCondition(
            study_age_days=self.study_age_days, not_read_days=self.not_read_days,
            modalities=tuple(v.strip().upper() for v in _as_tuple(self.modality)),
            sources=tuple(v.strip() for v in _as_tuple(self.source)),
            sop_classes=tuple(v.strip() for v in _as_tuple(self.sop_class)),
            min_bytes=self.min_study_bytes, max_bytes=self.max_study_bytes,
        )


class RuleAction(BaseModel):
    """What a lifecycle rule does: exactly one of ``move_to``, ``copy_to``, ``delete`` or ``compress``."""

    model_config = ConfigDict(extra="forbid")

    move_to: str | None = Field(None, description="Keep the study's blobs on this store only (copy, verify, drop).")
    copy_to: str | list[str] | None = Field(
        None, description="Keep a verified copy on each of these stores as well (replication).")
    delete: bool | None = Field(
        None, description="true: delete the study (into the trash for grace_days, then purged; services/trash.py).")
    grace_days: float | None = Field(
        None, ge=0, description="With delete: days in the trash before the purge (default: delete_grace_days).")
    compress: str | None = Field(
        None, description="Re-encode native pixel data losslessly at rest: jpeg-ls or jpeg2000 "
        "(services/compression.py; the original is given back bit for bit).")

    @model_validator(mode="after")
    def _check(self) -> RuleAction:
        if self.delete is False:
            raise ValueError("delete = false does nothing: leave it out, or disable the rule (enabled = false)")
        given = [n for n in ("move_to", "copy_to", "delete", "compress") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("an action needs exactly one of move_to, copy_to, delete or compress")
        if self.compress is not None:
            from dicomvault.dicom.lossless import codec_syntax  # numpy and the codecs: only when a rule compresses

            self.compress = self.compress.strip().lower()
            codec_syntax(self.compress)
        if self.copy_to is not None and not _as_tuple(self.copy_to):
            raise ValueError("copy_to names no store")
        if self.grace_days is not None and not self.delete:
            raise ValueError("grace_days belongs to a delete action")
        return self

    def target(self) -> CopyTarget:
        """The copies a move or copy action wants (a delete action wants none: ``stores`` is empty)."""
        if self.move_to is not None:
            return CopyTarget(stores=(self.move_to,), exclusive=True)
        return CopyTarget(stores=tuple(dict.fromkeys(_as_tuple(self.copy_to))), exclusive=False)

    @property
    def stores(self) -> tuple[str, ...]:
        return self.target().stores


class LifecycleRule(BaseModel):
    """One ``[[lifecycle]]`` rule."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Shown in plans, jobs and logs.")
    when: RuleWhen
    action: RuleAction
    enabled: bool = Field(True, description="false: the rule is kept in the file but not applied.")

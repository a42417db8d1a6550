"""Configuration of routing (issue #12 item 3): ``[[route]]`` rules that forward what the archive stores to peers.

A few lines of TOML forward every CT from the scanners to the reading PACS once each study is complete::

    [[route]]
    name = "CT to the reading PACS"
    on = "stable"               # or "stored": each instance as soon as it is stored
    stable_seconds = 120        # a study is stable when nothing new arrived for this long (default 60)
    when = { modality = "CT", source = ["CT1", "CT2"], attributes = { "00080080" = "General Hospital" } }
    to = "PACS"                 # a known peer (dicomvault peers add, or the configuration file)
    via = "dimse"               # or "dicomweb" (STOW-RS to the peer's DICOMweb URL)
    transfer_syntax = "1.2.840.10008.1.2.4.80"   # preferred when the peer accepts it (default: as stored)
    commitment = true           # ask the peer for storage commitment; "confirmed" only once it commits
    coerce = ["PACS issuer"]    # [[coercion]] rules applied to the forwarded copy (ingest = false: only there)

Every model forbids unknown keys: a misspelt condition must stop the start-up, never widen a route to every
instance. That ``to`` names a known peer is checked when the DIMSE server starts (``services.routing``), because
peers may be registered in the index, which ``Settings`` cannot read.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dicomvault.domain.peers import check_ae_title
from dicomvault.domain.routing import Route, RouteFilter

_TAG = re.compile(r"[0-9A-Fa-f]{8}")


def _as_tuple(value: str | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


class RouteWhen(BaseModel):
    """Which stored instances a route forwards; every condition given must hold (none: every instance)."""

    model_config = ConfigDict(extra="forbid")

    source: str | list[str] | None = Field(
        None, description="Received from one of these calling AE titles (DIMSE) or STOW-RS clients.")
    modality: str | list[str] | None = Field(None, description="The instance's Modality (0008,0060) is one of these.")
    sop_class: str | list[str] | None = Field(None, description="The instance's SOP Class UID is one of these.")
    attributes: dict[str, str | list[str]] = Field(
        default_factory=dict,
        description='Attributes of the stored header by tag ("00080080" = "HOSPITAL"): the first value equals one '
        "of the given values.")

    @field_validator("attributes")
    @classmethod
    def _check_tags(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for tag in value:
            if not _TAG.fullmatch(tag):
                raise ValueError(f"attribute key {tag!r} is not a tag of 8 hexadecimal digits (e.g. \"00080060\")")
        return value

    @model_validator(mode="after")
    def _check(self) -> RouteWhen:
        for name in ("modality", "source", "sop_class"):
            values = _as_tuple(getattr(self, name))
            if getattr(self, name) is not None and (not values or any(not v.strip() for v in values)):
                raise ValueError(f"{name} must not be empty")
        return self

    def filter(self) -> RouteFilter:
        return RouteFilter(
            sources=tuple(v.strip() for v in _as_tuple(self.source)),
            modalities=tuple(v.strip().upper() for v in _as_tuple(self.modality)),
            sop_classes=tuple(v.strip() for v in _as_tuple(self.sop_class)),
            attributes=tuple((tag.upper(), tuple(str(v) for v in _as_tuple(values)))
                             for tag, values in self.attributes.items()),
        )


class RouteRule(BaseModel):
    """One ``[[route]]`` rule."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="Shown in logs and status.")
    on: Literal["stored", "stable"] = Field(
        "stored", description="stored: forward each instance once stored; stable: once its study received nothing "
        "new for stable_seconds.")
    stable_seconds: float = Field(60.0, ge=1, le=7 * 86400, description="Seconds without a new instance after which "
                                  "a study is stable (on = \"stable\").")
    when: RouteWhen = Field(default_factory=lambda: RouteWhen.model_validate({}),
                            description="Conditions (none: every instance).")
    to: str = Field(description="AE title of the destination: a known peer.")
    via: Literal["dimse", "dicomweb"] = Field("dimse", description="C-STORE to its AE, or STOW-RS to its URL.")
    transfer_syntax: str | None = Field(
        None, description="Transfer syntax UID to send in when the peer accepts it (default: the peer's preferred "
        "syntaxes, else as stored).")
    commitment: bool = Field(False, description="Ask the peer for storage commitment (DIMSE only); an instance "
                             "counts as confirmed only once committed.")
    coerce: str | list[str] | None = Field(
        None, description="Names of [[coercion]] rules applied to the copy this route forwards (the stored object "
        "is unchanged); rules with ingest = false apply only there.")
    enabled: bool = Field(True, description="false: the rule is kept in the file but not applied.")

    @field_validator("to")
    @classmethod
    def _check_to(cls, value: str) -> str:
        return check_ae_title(value)

    @field_validator("transfer_syntax")
    @classmethod
    def _check_syntax(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c not in "0123456789." for c in value)):
            raise ValueError(f"transfer syntax {value!r} is not a UID")
        return value

    @field_validator("coerce")
    @classmethod
    def _check_coerce(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = _as_tuple(value)
        if value is not None and (not names or any(not n.strip() for n in names)):
            raise ValueError("coerce must name [[coercion]] rules")
        return value

    @model_validator(mode="after")
    def _check(self) -> RouteRule:
        if self.commitment and self.via != "dimse":
            raise ValueError("commitment = true needs via = \"dimse\" (storage commitment is a DIMSE service)")
        return self

    def route(self) -> Route:
        return Route(name=self.name, on=self.on, stable_seconds=self.stable_seconds, filter=self.when.filter(),
                     destination=self.to, via=self.via, transfer_syntax=self.transfer_syntax,
                     commitment=self.commitment, coerce=tuple(n.strip() for n in _as_tuple(self.coerce)))

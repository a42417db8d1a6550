"""Administrative HTTP routes (the ``admin`` scope), outside DICOMweb's ``/dicom-web`` root.

``POST /admin/studies/{study_uid}/recall`` starts the recall of a study whose blobs are on an archive storage class
(``services.recall``): the restores are requested before the answer, which is 202 with the ``recall`` job that
follows them (``GET``-able with ``dicomvault jobs show ID``) and the counts, or 200 when the study is readable
already (nothing to follow). Retrieval answers 503 with a reason pointing here while the study is not restored.

``/admin/peers`` lists (``GET``), registers or replaces (``PUT /admin/peers/{aet}``, 201 when new), removes
(``DELETE``, 204) and verifies (``POST …/echo``: C-ECHO and QIDO-RS round trips) the remote systems of
``services.peers``; a peer of the configuration file is listed but changed only there (409).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from dicomvault.dicomweb.security import Principal, require_scope
from dicomvault.dicomweb.wado_common import services
from dicomvault.domain.errors import InvalidQuery, Unsupported
from dicomvault.domain.peers import Permission, RemotePeer
from dicomvault.services.peers import PeerService

router = APIRouter(prefix="/admin", tags=["Admin"])
admin_scope = Depends(require_scope("admin"))


@router.post("/studies/{study_uid}/recall", summary="Recall a study from archive storage")
def recall_study(request: Request, study_uid: str, _who: Principal = admin_scope) -> JSONResponse:
    archive = services(request)
    recall = archive.recall
    if recall is None:
        raise Unsupported("this archive has no recall service")
    result = recall.start(study_uid)
    return JSONResponse(result.as_dict(), status_code=200 if result.settled else 202)


# -- peers (issue #12: the registry in the index; ``services.peers``) -----------------------------------------


class PeerBody(BaseModel):
    """A peer's definition (``PUT /admin/peers/{aet}``); the AE title comes from the path."""

    model_config = ConfigDict(extra="forbid")

    host: str = ""
    port: int = Field(0, ge=0, le=65535)
    permissions: list[Permission] = Field(default_factory=list)
    move_destination: bool = False
    hosts: list[str] = Field(default_factory=list)
    tls: bool = False
    dicomweb_url: str | None = None
    dicomweb_token: str | None = None
    transfer_syntaxes: list[str] = Field(default_factory=list)
    description: str = Field("", max_length=256)


def _peers(request: Request) -> PeerService:
    peers = services(request).peers
    if peers is None:
        raise Unsupported("this archive has no peer registry")
    return peers


@router.get("/peers", summary="List the known peers")
def list_peers(request: Request, _who: Principal = admin_scope) -> JSONResponse:
    return JSONResponse([p.public() for p in _peers(request).all()])


@router.put("/peers/{aet}", summary="Register or replace a peer")
def put_peer(request: Request, aet: str, body: PeerBody, _who: Principal = admin_scope) -> JSONResponse:
    peer = RemotePeer(aet=aet, host=body.host, port=body.port, permissions=frozenset(body.permissions),
                      move_destination=body.move_destination, hosts=tuple(body.hosts), tls=body.tls,
                      dicomweb_url=body.dicomweb_url, dicomweb_token=body.dicomweb_token,
                      transfer_syntaxes=tuple(body.transfer_syntaxes), description=body.description)
    try:
        created = _peers(request).add(peer)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None  # 400 with the reason (a bad AE title, port, URL …)
    return JSONResponse(_peers(request).get(aet).public(), status_code=201 if created else 200)


@router.delete("/peers/{aet}", summary="Remove a registered peer", status_code=204)
def delete_peer(request: Request, aet: str, _who: Principal = admin_scope) -> Response:
    _peers(request).remove(aet)
    return Response(status_code=204)


@router.post("/peers/{aet}/echo", summary="Verify a peer (C-ECHO, QIDO-RS)")
def echo_peer(request: Request, aet: str, _who: Principal = admin_scope) -> JSONResponse:
    results = _peers(request).echo(aet)
    return JSONResponse({k: {"ok": r.ok, "ms": round(r.milliseconds, 1), "detail": r.detail}
                         for k, r in results.items()})

"""Administrative HTTP routes (the ``admin`` scope), outside DICOMweb's ``/dicom-web`` root.

``POST /admin/studies/{study_uid}/recall`` starts the recall of a study whose blobs are on an archive storage class
(``services.recall``): the restores are requested before the answer, which is 202 with the ``recall`` job that
follows them (``GET``-able with ``dicomvault jobs show ID``) and the counts, or 200 when the study is readable
already (nothing to follow). Retrieval answers 503 with a reason pointing here while the study is not restored.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from dicomvault.dicomweb.security import Principal, require_scope
from dicomvault.dicomweb.wado_common import services
from dicomvault.domain.errors import Unsupported

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

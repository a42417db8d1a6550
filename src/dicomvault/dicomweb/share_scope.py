"""The one rule for a share link's visitor on the HTTP API: that study, read-only, nothing else.

A share link's session (``services.shares``) acts as a principal with the ``read`` scope and ``study`` set. The
scope alone would let it read the whole archive, so ``security.require_scope`` calls ``admit`` for every route
such a principal reaches, *after* the scope check (STOW-RS, DELETE and ``/admin`` already answer 403 there):
- a route with a ``{study}`` path parameter (WADO-RS retrieve, metadata, frames, bulk data, rendered, thumbnail;
  QIDO-RS under a study) is admitted only for the shared study; another study answers 404, as a study that does
  not exist would (the link reveals nothing about what else is stored). Every lookup under a study is made with
  the study's UID too (series and instance UIDs of another study under the shared study's path find nothing);
- QIDO-RS ``/studies``, ``/series``, ``/instances`` are admitted and answer within the shared study only
  (``narrow_query``, called by ``qido.search``);
- WADO-URI ``/wado`` is admitted; the instance found must belong to the shared study (``require_study``, called by
  ``wado_uri``: the ``studyUID`` parameter is checked and so is the study the index holds for the object);
- anything else (``/metrics``, ``/openapi.json``, ``/admin/…``, routes added later) answers 403: new routes are
  closed to share visitors until they are listed here.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

from dicomvault.domain.errors import NotFound
from dicomvault.services.auth import Principal

DICOMWEB_ROOT = "/dicom-web"
#: routes without a ``{study}`` parameter that a share visitor may reach (their handlers confine the answer)
CONFINED_ROUTES = frozenset({f"{DICOMWEB_ROOT}/studies", f"{DICOMWEB_ROOT}/series", f"{DICOMWEB_ROOT}/instances",
                             "/wado"})
_READ_METHODS = frozenset({"GET", "HEAD"})


def shared_study(request: Request) -> str | None:
    """The study the request's principal is confined to, or None (not a share visitor)."""
    principal = getattr(request.state, "principal", None)
    return principal.study if isinstance(principal, Principal) else None


def admit(request: Request, principal: Principal) -> None:
    """Refuse (404/403) a share visitor's request outside its study; nothing for other principals."""
    if principal.study is None:
        return
    if request.method not in _READ_METHODS:
        raise HTTPException(403, "a share link only reads")
    path = _app_path(request)
    study = request.path_params.get("study")
    if study is not None and path.startswith(f"{DICOMWEB_ROOT}/studies/"):
        require_study(principal.study, study)
        return
    if study is None and path.rstrip("/") in CONFINED_ROUTES:
        return
    raise HTTPException(403, "a share link reaches its study's images and nothing else")


def _app_path(request: Request) -> str:
    """The request's path within the app (without a ``root_path`` a proxy mounted it under)."""
    path = str(request.scope.get("path", ""))
    root = str(request.scope.get("root_path", "") or "")
    return path[len(root):] if root and path.startswith(root) else path


def require_study(shared: str | None, study_uid: str | None) -> None:
    """``NotFound`` unless ``study_uid`` is the shared study (nothing to check when ``shared`` is None)."""
    if shared is not None and study_uid != shared:
        raise NotFound("no instances match")


def narrow_query(keys: dict[str, str], shared: str | None) -> bool:
    """Confine QIDO-RS matching ``keys`` to the shared study (in place); False when the query asks only for other
    studies (the answer is then empty). Nothing to do when ``shared`` is None."""
    if shared is None:
        return True
    given = keys.get("StudyInstanceUID")
    if given in (None, "", "*") or shared in str(given).split("\\"):
        keys["StudyInstanceUID"] = shared
        return True
    return False

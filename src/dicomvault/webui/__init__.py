"""Browser front end: the OHIF web viewer, served as static files next to the DICOMweb API it reads from."""

from dicomvault.webui.viewer import mount_viewer

__all__ = ["mount_viewer"]

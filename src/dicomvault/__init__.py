"""DicomVault: a vendor-neutral DICOM archive (DIMSE + DICOMweb) in Python."""

__version__ = "0.1.0"

"""A small, geometrically consistent study for the browser tests: a 20-slice CT series and a multi-frame object.

Why synthetic: the viewer sorts slices by position, shows "I:<InstanceNumber> (<index>/<count>)", and the test
checks that scrolling changes both the overlay and the pixels, so every slice has its own position, number and
content (a disk whose radius grows along the stack, on a gradient so no region is flat).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    RLELossless,
    generate_uid,
)

CT_SLICES = 20
MF_FRAMES = 8
SIZE = 64
PATIENT_ID = "E2E-VIEWER-1"
PATIENT_NAME = "Viewer^Test"


@dataclass(frozen=True)
class E2EStudy:
    study_uid: str
    ct_series_uid: str
    mf_series_uid: str
    objects: list[bytes]


@dataclass(frozen=True)
class ViewerSite:
    """Where the viewer runs (base URL) and what it was given to show."""

    url: str
    study: E2EStudy


def _phantom(index: int, count: int, dtype: type[np.integer], high: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    gradient = (xx + yy) / (2 * SIZE) * (high / 3)
    radius = 3 + 10 * index / max(count - 1, 1)
    disk = ((xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2) <= radius**2
    return np.where(disk, high, gradient).astype(dtype)


def _base(study_uid: str, series_uid: str, sop_class: str, series_number: int, description: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = PATIENT_ID
    ds.PatientName = PATIENT_NAME
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240315"
    ds.StudyTime = "093000"
    ds.StudyID = "E2E"
    ds.AccessionNumber = "ACC-E2E-1"
    ds.StudyDescription = "Viewer end-to-end"
    ds.SeriesDescription = description
    ds.SeriesNumber = series_number
    ds.SeriesDate = "20240315"
    ds.SeriesTime = "093100"
    ds.Rows = SIZE
    ds.Columns = SIZE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    return ds


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def build_study() -> E2EStudy:
    """20 native CT slices 2.5 mm apart, and an 8-frame RLE-compressed secondary capture, in one study."""
    study_uid, ct_uid, mf_uid = generate_uid(), generate_uid(), generate_uid()
    frame_of_reference = generate_uid()
    objects: list[bytes] = []
    for i in range(CT_SLICES):
        ds = _base(study_uid, ct_uid, CTImageStorage, 1, "Axial stack")
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = i + 1
        ds.FrameOfReferenceUID = frame_of_reference
        ds.ImagePositionPatient = [-80.0, -80.0, -25.0 + 2.5 * i]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [2.5, 2.5]
        ds.SliceThickness = 2.5
        ds.SliceLocation = -25.0 + 2.5 * i
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 400
        ds.WindowWidth = 2000
        ds.PixelData = _phantom(i, CT_SLICES, np.uint16, 3000).tobytes()
        objects.append(_part10(ds))

    mf = _base(study_uid, mf_uid, MultiFrameGrayscaleByteSecondaryCaptureImageStorage, 2, "Multi-frame capture")
    mf.Modality = "OT"
    mf.ConversionType = "WSD"
    mf.InstanceNumber = 1
    mf.NumberOfFrames = MF_FRAMES
    mf.FrameIncrementPointer = 0x00181063  # Frame Time
    mf.FrameTime = 100.0
    mf.BitsAllocated = 8
    mf.BitsStored = 8
    mf.HighBit = 7
    mf.PixelRepresentation = 0
    frames = np.stack([_phantom(i, MF_FRAMES, np.uint8, 250) for i in range(MF_FRAMES)])
    mf.compress(RLELossless, frames)
    objects.append(_part10(mf))
    return E2EStudy(study_uid, ct_uid, mf_uid, objects)

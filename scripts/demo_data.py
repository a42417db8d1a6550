"""Writes a small, made-up archive's worth of studies (no real patient): CT and MR series of phantoms, a CR, a
Secondary Capture without Modality, several patients and dates. For trying the pages and the viewer, and for the
screenshots of docs/images (scripts/screenshots.py).

Usage: python scripts/demo_data.py FOLDER [--studies 20] [--slices 24]
then:  storescu -aec DICOMVAULT -nh +sd +r 127.0.0.1 11112 FOLDER   (or upload FOLDER at /ui/upload)
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

PATIENTS = [
    ("DOE^JANE", "DV-1001", "19640312", "F"), ("ROE^RICHARD", "DV-1002", "19581120", "M"),
    ("MUSTERMANN^ERIKA", "DV-1003", "19790704", "F"), ("DUPONT^JEAN", "DV-1004", "19830215", "M"),
    ("ROSSI^MARIO", "DV-1005", "19500909", "M"), ("NOVAK^JANA", "DV-1006", "19911130", "F"),
    ("TANAKA^HANAKO", "DV-1007", "19670521", "F"), ("SILVA^JOAO", "DV-1008", "19720101", "M"),
]
KINDS = [
    ("CT", CTImageStorage, "CT CHEST W/O CONTRAST", "Axial 1.0"),
    ("MR", MRImageStorage, "MR BRAIN", "T1 AX"),
    ("CT", CTImageStorage, "CT ABDOMEN PELVIS", "Axial 2.0"),
    ("CR", ComputedRadiographyImageStorage, "XR CHEST PA", "PA"),
    ("", SecondaryCaptureImageStorage, "SCREEN CAPTURE", "Capture"),
]


def phantom(size: int, z: float, kind: str) -> np.ndarray:
    """A head/body-like phantom slice: an ellipse with inner structures, varying with ``z`` (0..1)."""
    y, x = np.mgrid[-1:1:complex(size), -1:1:complex(size)]
    body = (x / 0.85) ** 2 + (y / (0.7 if kind != "MR" else 0.85)) ** 2 < 1
    image = np.where(body, 1040.0, 0.0)
    r = 0.25 + 0.15 * np.sin(np.pi * z)
    image += np.where((x + 0.35) ** 2 + y ** 2 < r ** 2, -800.0, 0.0) * body
    image += np.where((x - 0.35) ** 2 + y ** 2 < r ** 2, -800.0, 0.0) * body
    image += np.where(x ** 2 + (y + 0.1) ** 2 < 0.08 ** 2, 400.0, 0.0)
    ring = np.abs(np.sqrt((x / 0.85) ** 2 + (y / 0.7) ** 2) - 0.95) < 0.03
    image += np.where(ring, 700.0, 0.0)
    noise = np.random.default_rng(int(z * 1000)).normal(0, 12, image.shape)
    return np.clip(image + noise, 0, 4095).astype(np.uint16)


def instance(sop_class: str, study: str, series: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    return ds


def write_study(folder: Path, number: int, slices: int) -> int:
    name, pid, birth, sex = PATIENTS[number % len(PATIENTS)]
    modality, sop_class, description, series_description = KINDS[number % len(KINDS)]
    study, frame_of_reference = generate_uid(), generate_uid()
    day = date(2026, 11, 30) - timedelta(days=3 * number)
    size = 256 if modality != "CR" else 512
    count = 1 if modality in ("CR", "") else slices
    written = 0
    for series_number in (1, 2) if count > 1 else (1,):
        series = generate_uid()
        for i in range(count):
            ds = instance(sop_class, study, series)
            ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, pid, birth, sex
            ds.StudyDate, ds.StudyTime = day.strftime("%Y%m%d"), f"{8 + number % 10:02d}{number % 60:02d}00"
            ds.AccessionNumber, ds.StudyDescription, ds.StudyID = f"ACC{26000 + number}", description, str(number)
            ds.ReferringPhysicianName, ds.InstitutionName = "WHO^CARES", "DicomVault Demo Hospital"
            if modality:
                ds.Modality = modality
            ds.SeriesNumber, ds.InstanceNumber = series_number, i + 1
            ds.SeriesDescription = series_description + (" (recon 2)" if series_number == 2 else "")
            ds.Rows = ds.Columns = size
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            if modality in ("CT", "MR"):
                ds.ImagePositionPatient = [-128.0, -128.0, float(i * 2)]
                ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
                ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
                ds.FrameOfReferenceUID = frame_of_reference
            if modality == "CT":
                ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
            pixels = phantom(size, (i + 0.5) / count, modality)
            ds.PixelData = pixels.tobytes()
            ds.save_as(folder / f"s{number:03d}_{series_number}_{i:04d}.dcm", enforce_file_format=True)
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--slices", type=int, default=24)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    total = sum(write_study(args.folder, n, args.slices) for n in range(args.studies))
    print(f"{total} instances of {args.studies} studies in {args.folder}")


if __name__ == "__main__":
    main()

"""The byte-level facts about DICOM encodings that several walks need, stated once (PS3.5 7.1.2, A.1-A.4).

Before this module three walks kept their own list of VRs with a 4-byte length (one without SV and UV, added to
the standard in 2019) and the native transfer syntaxes were listed three times. Everything here comes from
pydicom's tables where it has one.
"""

from __future__ import annotations

from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

#: Explicit VRs whose length field is 4 bytes, after 2 reserved bytes (PS3.5 Table 7.1-1).
LONG_LENGTH_VRS: frozenset[str] = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
#: The same as the two bytes found in an explicit VR element header.
LONG_LENGTH_VR_BYTES: frozenset[bytes] = frozenset(vr.encode("ascii") for vr in LONG_LENGTH_VRS)

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
#: Transfer syntaxes whose pixel data is native (not encapsulated), the deflated one included.
NATIVE_SYNTAXES: frozenset[str] = frozenset({
    IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
})
#: Native syntaxes whose bytes are the data set as is (not deflated).
NATIVE_UNDEFLATED: frozenset[str] = NATIVE_SYNTAXES - {DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}

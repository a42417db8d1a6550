"""DICOMweb (PS3.18) front end: STOW-RS, QIDO-RS, WADO-RS, WADO-URI, over the core services."""

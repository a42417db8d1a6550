"""DIMSE front end (pynetdicom): C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE over the core services."""

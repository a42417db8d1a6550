"""The archive's vocabulary: depends on the standard library and pydicom only."""

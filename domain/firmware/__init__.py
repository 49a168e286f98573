"""Releases: versions, the signed manifest and its I/O-free verification, and their errors."""

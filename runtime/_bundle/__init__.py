"""Bundles on disk: every file name (`layout`), the manifest types and schema checks, file
hashes and digests, cost tables beside a bundle, and verification of the stored samples
(torch-free)."""

"""Encrypted, consistent backups of a cloud data dir (``kedge backup`` / ``kedge restore``).

:mod:`kedge.backup.format` is the pure file format (header, keys, chunked AES-256-GCM,
manifest); :mod:`kedge.backup.archive` takes the snapshot and restores it.
"""

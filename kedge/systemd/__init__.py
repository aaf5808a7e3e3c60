"""systemd units for cloudcore and edgecore, and the hardening policy they are held to.

:mod:`~kedge.systemd.policy` is the policy (which sandbox directives each role's unit must
carry, the ``systemd-analyze security`` exposure goals) and a parser for unit files and
drop-ins; :mod:`~kedge.systemd.units` builds the units from it. Both are pure: text and
options in, text or findings out. ``kedge systemd`` (:mod:`kedge.cli.systemd`) writes the
units; ``kedge audit`` (KEDGE-CLOUD-022, KEDGE-EDGE-012) checks installed ones against the
same policy. :mod:`~kedge.systemd.analyze` runs ``systemd-analyze`` (the only I/O here).
"""

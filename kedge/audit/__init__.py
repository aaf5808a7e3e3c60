"""``kedge audit``: a deployment audit with a data-driven check catalogue.

Layers: :mod:`~kedge.audit.gather` and :mod:`~kedge.audit.probe` collect facts (I/O);
:mod:`~kedge.audit.checks` decides (pure); :mod:`~kedge.audit.render` formats one
:class:`~kedge.audit.model.Report` as text, JSON, JUnit or SARIF.
"""

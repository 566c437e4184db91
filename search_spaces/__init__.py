"""Declarative search spaces shipped with nni-safs (installed as ``nni_safs.search_spaces``)."""

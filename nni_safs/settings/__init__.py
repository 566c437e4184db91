"""What a run asks for: its settings (:class:`~nni_safs.settings.config.SafsConfig`), the catalogs
of models and datasets it names (with their facts), and the user modules that add to them.
No torch, no nni."""

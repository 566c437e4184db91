"""What a run asks for: its settings (:class:`~nni_safs.settings.config.SafsConfig`), the registries
they name models, datasets and ops from, and the user modules that add to them. No torch, no nni."""

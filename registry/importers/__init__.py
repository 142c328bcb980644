"""Discover what admins already run and import it for review (``docs/import-export.md``).

    read a source (one module each)  ->  Discovery (plain data, ``found``)
    plan against the registry         ->  ImportPlan: the diff (``plan``, ``matching``)
    apply                             ->  one write transaction (``apply``)

Sources: ``gguf`` (files or a folder), ``ollama`` and ``openai`` (a running server's URL),
``hf`` (a Hugging Face snapshot folder), ``litellm`` (a proxy ``config.yaml``). Bad input is
one :class:`ImportFailed` naming the file or URL, raised before anything is written.
"""

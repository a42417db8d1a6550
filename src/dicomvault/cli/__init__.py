"""Command-line front end (typer + rich): ``dicomvault serve | import | find | verify | stats`` (and the
``token``, ``storage`` and ``jobs`` sub-apps). Like every front end it works through the ``Archive`` built by
``bootstrap``: it never touches the index database or the blob store's files directly.
"""

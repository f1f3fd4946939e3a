"""The desktop app: a Qt window over the in-process node (PySide6 + qasync).

``app.gui.main.main()`` is the entry point. Torch never loads in this process: the runners
are subprocesses, and the demo models are built by one (``python -m app models make-tiny``).
"""

"""The frozen app's entry point (PyInstaller runs this script).

``orchard ...`` is ``app.cli:main``, as the installed console script is. ``ORCHARD_SMOKE=window``
runs :mod:`app.smoke` instead, so a built bundle can check that its window opens and closes.
"""

import multiprocessing
import os
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    if os.environ.get("ORCHARD_SMOKE") == "window":
        from app.smoke import main as smoke

        sys.exit(smoke(sys.argv[1:]))
    from app.cli import main

    sys.exit(main())

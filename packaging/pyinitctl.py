"""The entry script of ``pyinitctl`` in the standalone bundle (packaging/pyinit.spec).

The pip install's console script calls the same function.  pyinitctl starts no process,
so the environment PyInstaller's launcher adds does not matter here (pyinit's own entry
removes it before anything can pass it on).
"""

import sys

from pyinit.ctl import main

sys.exit(main())

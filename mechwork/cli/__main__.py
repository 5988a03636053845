"""``python -m mechwork.cli``: the ``mechwork`` command (:func:`mechwork.cli.main`)."""

import sys

from mechwork.cli import main

sys.exit(main())

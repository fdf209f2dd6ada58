"""The ``stefaland`` command line: parsing only; all work happens in the ``stefaland`` library."""

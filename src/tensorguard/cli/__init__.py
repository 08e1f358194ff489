"""The ``tensorguard`` command: one thin click command per verb over the public API and the
application layer (``tensorguard.app``).

``main`` holds the group, the exit codes and the one-line error handling; ``options`` the options
every command shares; one module per area registers its commands (``models``: inspect,
fingerprint, sensitivity, compare; ``families``: cluster, predict; ``catalogue``: index, scan;
``genealogy``: tree; ``demo``). Each command imports only what it needs, inside its body, so
that ``tensorguard --help`` starts in a fraction of a second and ``fingerprint`` never loads
scikit-learn, SciPy or matplotlib.
"""

from tensorguard.cli import (  # noqa: F401  (registers the commands)
    catalogue,
    demo,
    families,
    genealogy,
    models,
)
from tensorguard.cli.main import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_POLICY,
    FLAGS,
    cli,
    main,
    one_line,
    run,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_POLICY", "FLAGS",
           "cli", "main", "one_line", "run"]

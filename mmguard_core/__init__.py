"""mmguard_core: the MMGuard protection engine, usable as a plain library and CLI.

Knows nothing of the web service (app/) or the workers (worker/).
"""

__version__ = "0.1.0"

"""The submission HTTP API and the status page (``imgrestore api``). See services/api/README.md.

The API records and queues jobs; it never touches pixels except to serve small thumbnails, and never imports torch.
"""

from .app import create_app

__all__ = ["create_app"]

"""The committed OpenAPI schema, ``services/api/openapi.json``.

Regenerate after changing the API:   python -m services.api.openapi --write
Check it is current (CI, tests):      python -m services.api.openapi --check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMMITTED = Path(__file__).with_name("openapi.json")


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def current_schema() -> dict:
    from ..config import Settings
    from .app import create_app

    # The schema does not depend on settings; nothing here connects to Redis or S3.
    return create_app(Settings(api_tokens=None)).openapi()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {COMMITTED.name}")
    group.add_argument("--check", action="store_true", help="exit 1 when the committed schema is out of date")
    args = parser.parse_args(argv)
    text = render(current_schema())
    if args.write:
        COMMITTED.write_text(text)
        print(f"wrote {COMMITTED}", file=sys.stderr)
    elif args.check:
        if not COMMITTED.exists() or COMMITTED.read_text() != text:
            print(f"{COMMITTED} is out of date: run python -m services.api.openapi --write", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

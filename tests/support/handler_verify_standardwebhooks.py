"""Verifies one Standard Webhooks request with the reference `standardwebhooks` package.

Reads a JSON object on stdin: {"secret": "whsec_...", "headers": {name: value}, "body": "..."}.
Exits 0 if `Webhook(secret).verify(body, headers)` succeeds, 1 if verification fails,
3 if the `standardwebhooks` package is not installed
(pip install -r tests/support/handler_requirements.txt).
"""

import json
import sys

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError as e:
    print(f"standardwebhooks is not installed: {e}", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    request = json.load(sys.stdin)
    try:
        Webhook(request["secret"]).verify(request["body"], request["headers"])
    except WebhookVerificationError as e:
        print(f"verification failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

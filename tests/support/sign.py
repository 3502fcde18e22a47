#!/usr/bin/env python3
"""Reference signer/validator for recordhook's tests, over the official `signalwire` SDK.

The point is an *independent* implementation: every signature here comes from the SDK's
own `RequestValidator` (`signalwire.request_validator`), never from HMAC code of ours.
Install the pinned SDK with `pip install -r tests/support/requirements.txt`.

Input (stdin) is one JSON request, or a JSON array of requests (a batch, so the test
suite starts Python only a few times):

    {"key": "PSK_...", "url": "https://...", "form": [["Name", "value"], ...]}
    {"key": "PSK_...", "url": "https://...", "raw": "{\"a\": 1}"}
    {"mode": "validate", "key": ..., "url": ..., "form" | "raw": ..., "signature": "..."}

`mode` is "sign" (the default) or "validate". What each one calls in the SDK:

    sign     + form         -> build_signature_with_compatibility(url, form)  (Scheme B)
    sign     + raw          -> build_signature(url, raw)                       (Scheme A)
    sign     + raw + compat -> build_signature_with_compatibility(url, json.loads(raw))
    validate + form         -> validate(url, form, signature)
    validate + raw          -> validate(url, raw, signature)
    validate + raw + compat -> validate_with_compatibility(url, raw, signature)
                               (the Twilio path; the only one that honours bodySHA256)

`"compat": true` selects the compatibility variants. A form is passed to the SDK as a
`multidict.MultiDict` (as the SDK's own tests do), so repeated names are kept.

Output: for a single request, the signature or `true`/`false` on one line. For a batch, a
JSON array with one entry per request: the signature string, a boolean, or
`{"error": "..."}` when the SDK raised (for validation, the SDK rejecting by exception).

`sign.py --check` prints the SDK version and exits 0, or exits 3 if it is not importable.
"""

import json
import sys


def load_validator_class():
    from signalwire.request_validator import RequestValidator

    return RequestValidator


def sdk_version():
    try:
        from importlib.metadata import version

        return version("signalwire")
    except Exception:  # pragma: no cover - metadata missing is not fatal for --check
        return "unknown"


def form_params(pairs):
    from multidict import MultiDict

    return MultiDict([(str(name), str(value)) for name, value in pairs])


def run(validator_class, req):
    validator = validator_class(req["key"])
    url = req["url"]
    mode = req.get("mode", "sign")
    compat = bool(req.get("compat", False))
    if "form" in req:
        form = form_params(req["form"])
        if mode == "sign":
            return validator.build_signature_with_compatibility(url, form)
        if mode == "validate":
            return bool(validator.validate(url, form, req["signature"]))
    elif "raw" in req:
        raw = req["raw"]
        if mode == "sign":
            if compat:
                # The fields the SDK's validate() falls back to for a raw JSON body.
                return validator.build_signature_with_compatibility(url, json.loads(raw))
            return validator.build_signature(url, raw)
        if mode == "validate":
            if compat:
                return bool(validator.validate_with_compatibility(url, raw, req["signature"]))
            return bool(validator.validate(url, raw, req["signature"]))
    else:
        raise ValueError('request needs "form" or "raw"')
    raise ValueError("unknown mode %r" % (mode,))


def main(argv):
    try:
        validator_class = load_validator_class()
    except ImportError as e:
        print(
            "the `signalwire` package is not importable (%s): "
            "pip install -r tests/support/requirements.txt" % (e,),
            file=sys.stderr,
        )
        return 3
    if argv[1:] == ["--check"]:
        print("signalwire %s" % (sdk_version(),))
        return 0
    if argv[1:]:
        print("usage: sign.py [--check] < request.json", file=sys.stderr)
        return 2

    request = json.load(sys.stdin)
    if isinstance(request, list):
        results = []
        for req in request:
            try:
                results.append(run(validator_class, req))
            except Exception as e:  # the SDK raising is a result worth reporting
                results.append({"error": "%s: %s" % (type(e).__name__, e)})
        json.dump(results, sys.stdout)
        sys.stdout.write("\n")
        return 0

    try:
        result = run(validator_class, request)
    except Exception as e:
        print("error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    print(("true" if result else "false") if isinstance(result, bool) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

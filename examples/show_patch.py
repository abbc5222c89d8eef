"""Print an AdmissionReview response from stdin with its JSON Patch decoded: `... | python show_patch.py`."""

import base64
import json
import sys

response = json.load(sys.stdin)["response"]
if "patch" in response:
    response["patch"] = json.loads(base64.b64decode(response["patch"]))
print(json.dumps(response, indent=2))

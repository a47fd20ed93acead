"""A pusher process for tests/test_publish.py: publish one SavedModel, print the result as JSON.

usage: python tests/publish_child.py SOURCE_DIR SERVING_ROOT MODEL_NAME FINGERPRINT

publish.py is loaded by file path, so the package __init__ files (and whatever TFX imports
they grow) stay out of the child and it starts fast. With
$TFX_SERVABLES_TEST_PAUSE_BEFORE_RENAME set, publish() pauses between copy and rename.
"""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

PUBLISH_PY = Path(__file__).resolve().parents[1] / "components" / "versioned_pusher" / "publish.py"


def main(argv: list[str]) -> None:
    source_dir, serving_root, model_name, fingerprint = argv
    spec = importlib.util.spec_from_file_location("publish_under_test", PUBLISH_PY)
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    result = publish.publish(source_dir, serving_root, model_name, fingerprint=fingerprint)
    print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

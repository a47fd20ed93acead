"""A pusher process for tests/test_publish.py: publish one SavedModel, print the result as JSON.

usage: python tests/publish_child.py SOURCE_DIR SERVING_ROOT MODEL_NAME FINGERPRINT [PAUSE_MARKER]

publish.py is loaded by file path, so the package __init__ files (and whatever TFX imports
they grow) stay out of the child and it starts fast. With
PAUSE_MARKER, the copy into the temp dir is wrapped so that, once it is complete, the child
creates PAUSE_MARKER and waits (at most 10 min) until the test deletes it or kills the child:
the moment between copy and rename.
"""

import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

PUBLISH_PY = Path(__file__).resolve().parents[1] / "components" / "versioned_pusher" / "publish.py"


def main(argv: list[str]) -> None:
    source_dir, serving_root, model_name, fingerprint, *pause = argv
    spec = importlib.util.spec_from_file_location("publish_under_test", PUBLISH_PY)
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    if pause:
        copy = publish._copy_tree_local

        def copy_then_pause(source: str, dst: str) -> None:
            copy(source, dst)
            Path(pause[0]).touch()
            deadline = time.monotonic() + 600
            while os.path.exists(pause[0]) and time.monotonic() < deadline:
                time.sleep(0.02)

        publish._copy_tree_local = copy_then_pause
    result = publish.publish(source_dir, serving_root, model_name, fingerprint=fingerprint)
    print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

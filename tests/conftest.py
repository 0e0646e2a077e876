import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]
#: ../shared/data beside the checkout (CI lays it there); KERASCNN_SHARED_DATA overrides it.
SHARED_DATA = Path(os.environ.get("KERASCNN_SHARED_DATA", ROOT.parent / "shared" / "data"))

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

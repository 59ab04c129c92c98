"""Runner behind scripts/bench: one flat JSON object of numbers per area."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(area: str) -> int:
    path = ROOT / "scripts" / f"bench_{area}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{area}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in a bench module look themselves up here
    sys.path.insert(0, str(ROOT))
    spec.loader.exec_module(module)
    results = module.run()
    bad = {k: v for k, v in results.items() if not isinstance(v, int | float) or math.isnan(v)}
    if bad:
        raise SystemExit(f"bench {area}: non-numeric results {bad}")
    width = max(map(len, results))
    print(f"\n{'key':{width}}  value")
    for key, value in results.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:{width}}  {shown}")
    out = ROOT / "bench-results" / f"{area}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

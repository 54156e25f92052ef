"""The production-stack chart's documented values, as a key table for tests/test_export.py.

Run on a checkout of github.com/vllm-project/production-stack (the chart itself is not copied here):

    python tests/tools/production_stack_keys.py CHECKOUT COMMIT > tests/data/production_stack_keys.json

Per key path (array items as `[]`) the types and enum of helm/values.schema.json, and whether helm/values.yaml
sets it (the chart documents each key there with a `# --` comment).
"""

import json
import sys
from pathlib import Path

import yaml


def walk(schema: dict, path: str, out: dict) -> None:
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if path:
        out[path] = {"types": types, **({"enum": schema["enum"]} if "enum" in schema else {})}
    for key, sub in schema.get("properties", {}).items():
        walk(sub, f"{path}.{key}" if path else key, out)
    if isinstance(schema.get("items"), dict):
        walk(schema["items"], f"{path}[]", out)


def paths_of(value: object, path: str, out: set) -> None:
    if path:
        out.add(path)
    if isinstance(value, dict):
        for k, v in value.items():
            paths_of(v, f"{path}.{k}" if path else k, out)
    elif isinstance(value, list):
        for v in value:
            paths_of(v, f"{path}[]", out)


def main() -> None:
    root, commit = Path(sys.argv[1]), sys.argv[2]
    table: dict = {}
    walk(json.loads((root / "helm" / "values.schema.json").read_text()), "", table)
    documented: set = set()
    paths_of(yaml.safe_load((root / "helm" / "values.yaml").read_text()), "", documented)
    for path, entry in table.items():
        entry["in_values_yaml"] = path in documented
    print(json.dumps({"chart": "vllm-project/production-stack helm/", "commit": commit, "keys": table}, indent=1))


main()

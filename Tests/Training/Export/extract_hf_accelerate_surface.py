#!/usr/bin/env python3
"""Re-extracts hf-accelerate-surface.json, the names an exported hf-accelerate job may use, from an Accelerate checkout.

    git clone https://github.com/huggingface/accelerate && git -C accelerate checkout v1.14.0
    python3 extract_hf_accelerate_surface.py accelerate > hf-accelerate-surface.json

Bumping the pinned version is then: check out the new tag, run this, run the ExportJob tests, read the diff. Only the
standard library is used (ast), so nothing has to be installed. The "transformers" section is not extracted: the job
uses four names from Transformers, checked by hand and carried over from the previous file (see its "evidence").
"""
import ast
import json
import os
import subprocess
import sys

SOURCES = {
    "config_file": "src/accelerate/commands/config/config_args.py",
    "launch": "src/accelerate/commands/launch.py",
    "constants": "src/accelerate/utils/constants.py",
    "dataclasses": "src/accelerate/utils/dataclasses.py",
    "accelerator": "src/accelerate/accelerator.py",
    "package": "src/accelerate/__init__.py",
    "utils_package": "src/accelerate/utils/__init__.py",
}


def parse(root, key):
    with open(os.path.join(root, SOURCES[key]), encoding="utf-8") as f:
        return ast.parse(f.read())


def classes(tree):
    return {node.name: node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def dataclass_fields(cls):
    return [s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]


def string_constant(tree, name):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
    raise KeyError(name)


def enum_values(cls):
    return [s.value.value for s in cls.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)]


def launch_options(tree):
    """Every --option of `accelerate launch` (the dest names, as the config file's keys map onto them)."""
    options = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--"):
                    options.add(arg.value)
    return sorted(options)


def members(cls):
    """Methods and properties of a class, with their parameter names (self left out)."""
    result = {}
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            a = node.args
            names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg != "self"]
            if a.vararg:
                names.append("*" + a.vararg.arg)
            if a.kwarg:
                names.append("**" + a.kwarg.arg)
            result[node.name] = names
    return dict(sorted(result.items()))


def exported_names(tree):
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    return sorted(names)


def git(root, *args):
    try:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(root, previous=None):
    config = classes(parse(root, "config_file"))
    launch = parse(root, "launch")
    constants = parse(root, "constants")
    dataclasses = classes(parse(root, "dataclasses"))
    accelerator = classes(parse(root, "accelerator"))["Accelerator"]
    with open(os.path.join(root, "setup.py"), encoding="utf-8") as f:
        setup = f.read()
    version = setup.split('version="', 1)[1].split('"', 1)[0]
    options = launch_options(launch)
    surface = {
        "engine": "hf-accelerate",
        "accelerate": {
            "version": version,
            "tag": git(root, "describe", "--tags", "--exact-match"),
            "commit": git(root, "rev-parse", "HEAD"),
            "sources": SOURCES,
        },
        "config_file_keys": sorted(dataclass_fields(config["BaseConfig"]) + dataclass_fields(config["ClusterConfig"])),
        # launch.py copies each fsdp_config key onto the --fsdp_<key> option of the same name and ignores the others
        # silently, so only these keys have an effect.
        "fsdp_config_keys": sorted(o[2:] for o in options if o.startswith("--fsdp_")),
        "launch_options": options,
        "compute_environments": enum_values(dataclasses["ComputeEnvironment"]),
        "distributed_types": enum_values(dataclasses["DistributedType"]),
        "mixed_precision": enum_values(dataclasses["PrecisionType"]),
        "fsdp_auto_wrap_policies": string_constant(constants, "FSDP_AUTO_WRAP_POLICY"),
        "fsdp2_state_dict_types": string_constant(constants, "FSDP2_STATE_DICT_TYPE"),
        "accelerate_exports": exported_names(parse(root, "package")),
        "accelerate_utils_exports": exported_names(parse(root, "utils_package")),
        "accelerator_members": members(accelerator),
    }
    if previous is not None:
        surface["transformers"] = previous["transformers"]
    return surface


if __name__ == "__main__":
    checkout = sys.argv[1] if len(sys.argv) > 1 else "accelerate"
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf-accelerate-surface.json")
    old = None
    if os.path.exists(here):
        with open(here, encoding="utf-8") as f:
            old = json.load(f)
    json.dump(main(checkout, old), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")

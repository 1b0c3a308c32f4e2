"""Benchmark: the installed size of requirements.txt (what `make demo` and a Space install).

Makes a fresh virtualenv in a temporary folder, installs requirements.txt
into it with pip (no torch is in it), and prints the size of the whole venv
and of its largest installed distributions.

    .venv/bin/python bench/install_size.py [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 500  # issue 14


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def distribution_sizes(python: Path) -> dict[str, int]:
    """Bytes of each installed distribution, from its RECORD (what pip installed)."""
    script = (
        "import json, importlib.metadata as m, os\n"
        "sizes = {}\n"
        "for d in m.distributions():\n"
        "    total = 0\n"
        "    for f in d.files or []:\n"
        "        p = d.locate_file(f)\n"
        "        total += os.path.getsize(p) if os.path.isfile(p) else 0\n"
        "    sizes[d.metadata['Name']] = total\n"
        "print(json.dumps(sizes))\n")
    # Run outside the checkout, whose musicgen.egg-info would count as installed.
    return json.loads(subprocess.run([str(python), "-c", script], check=True, cwd=python.parent,
                                     capture_output=True, text=True).stdout)


def measure(folder: Path) -> dict:
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r",
                    str(REPO_ROOT / "requirements.txt")], check=True)
    sizes = distribution_sizes(python)
    check = subprocess.run([str(python), "-c", "import torch"], capture_output=True)
    return {"venv_mb": round(folder_bytes(venv) / 2**20, 1),
            "largest_mb": {name: round(size / 2**20, 1) for name, size in
                           sorted(sizes.items(), key=lambda item: -item[1])[:12]},
            "torch_installed": check.returncode == 0, "target_mb": TARGET_MB,
            "python": sys.version.split()[0],
            "command": "python bench/install_size.py " + " ".join(sys.argv[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", help="make the venv here and keep it")
    args = parser.parse_args()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        result = measure(Path(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="musicgen-install-") as folder:
            result = measure(Path(folder))
    if args.json:
        print(json.dumps(result))
        return
    met = result["venv_mb"] <= TARGET_MB
    print(f"fresh venv with requirements.txt: {result['venv_mb']:.0f} MB "
          f"(target <= {TARGET_MB} MB: {'met' if met else 'NOT met'}); "
          f"torch installed: {result['torch_installed']}")
    for name, size in result["largest_mb"].items():
        print(f"  {size:7.1f} MB  {name}")


if __name__ == "__main__":
    main()

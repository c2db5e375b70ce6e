"""Run a notebook's jupytext source and write the executed `.ipynb` beside it.

I/O (starts a Jupyter kernel, writes the notebook). The `.py` (jupytext percent format) is the
source; the `.ipynb` is its executed copy, committed with its outputs:

    python -m notebooks.execute 01_callbacks    # full scale (minutes): 01_callbacks.ipynb
    python -m notebooks.execute --all --smoke    # smoke scale (seconds): runs/<name>.smoke.ipynb

A smoke run never overwrites the committed full-scale copy: it is written under the runs
folder (`$CONVJAX_NOTEBOOK_WORKDIR`, default notebooks/runs).

The kernel runs in `notebooks/` with this checkout first on `PYTHONPATH` (so it imports the
convjax beside the notebook, whatever is installed) and without pytest's fake CPU devices.
`tests/test_notebooks.py` runs every notebook at smoke scale through `run`, and checks that
each `.ipynb` has the same cells as its `.py` and no absolute path of a machine in its text.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
REPO = NOTEBOOKS.parent
NAMES = ("01_callbacks", "02_cnn", "03_transfer")
# An absolute path of a machine (home, temp, the checkout) in a notebook's text output.
MACHINE_PATH = re.compile(r"(?<![\w.~/-])/(?:home|root|tmp|work|Users|var|opt|usr|private)/")


def kernel_env(smoke: bool, workdir: str | None = None) -> dict[str, str]:
    """The environment the kernel starts with: ours, minus what would change the results."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["CONVJAX_NOTEBOOK_SMOKE"] = "1" if smoke else "0"
    # tests/conftest.py fakes 4 CPU devices for the sharding tests; a notebook runs as a
    # reader's would, on the real devices.
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = flags.strip()
    env.pop("MPLBACKEND", None)  # an inherited Agg backend would hide every figure
    if workdir is not None:
        env["CONVJAX_NOTEBOOK_WORKDIR"] = workdir
    return env


def run(name: str, smoke: bool, workdir: str | None = None,
        cell_timeout: int | None = None) -> nbformat.NotebookNode:
    """Executes notebooks/<name>.py and returns the notebook with its outputs."""
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
    client = NotebookClient(notebook, timeout=cell_timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=kernel_env(smoke, workdir))
    return notebook


def text_outputs(notebook: nbformat.NotebookNode) -> list[str]:
    """Every text a reader sees in the outputs (streams, plain/html results, tracebacks)."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts += [output.get("data", {}).get(k, "") for k in ("text/plain", "text/html")]
            texts += output.get("traceback", [])
    return ["".join(t) if isinstance(t, list) else t for t in texts]


def machine_paths(notebook: nbformat.NotebookNode) -> list[str]:
    """The output lines that name an absolute path of this (or any) machine."""
    return [line for text in text_outputs(notebook) for line in text.splitlines()
            if MACHINE_PATH.search(line)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"notebooks to run: {', '.join(NAMES)}")
    parser.add_argument("--all", action="store_true", help="run all three")
    parser.add_argument("--smoke", action="store_true", help="smoke scale (seconds)")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown or not (args.names or args.all):
        parser.error(f"name notebooks among {', '.join(NAMES)} (got {unknown}), or pass --all")
    for name in NAMES if args.all else args.names:
        start = time.perf_counter()
        notebook = run(name, args.smoke)
        seconds = time.perf_counter() - start
        leaks = machine_paths(notebook)
        if leaks:
            raise SystemExit(f"{name}: outputs name machine paths, not written:\n"
                             + "\n".join(leaks[:10]))
        out = NOTEBOOKS / f"{name}.ipynb"
        if args.smoke:
            runs = NOTEBOOKS / os.environ.get("CONVJAX_NOTEBOOK_WORKDIR", "runs")
            out = runs / f"{name}.smoke.ipynb"
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, out)
        scale = "smoke" if args.smoke else "full"
        print(f"{name}: executed at {scale} scale in {seconds:.0f} s, written to "
              f"{os.path.relpath(out)}", flush=True)


if __name__ == "__main__":
    main()
